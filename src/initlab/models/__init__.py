from initlab.models.activations import ACTIVATIONS, GAINS
from initlab.models.cnn import CNN
from initlab.models.mlp import MLP

__all__ = ["ACTIVATIONS", "CNN", "GAINS", "MLP"]
