from initlab.models.activations import ACTIVATIONS
from initlab.models.cnn import CNN
from initlab.models.mlp import MLP

__all__ = ["ACTIVATIONS", "CNN", "MLP"]
