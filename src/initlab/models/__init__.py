from initlab.models.activations import ACTIVATIONS
from initlab.models.cnn import CNN
from initlab.models.contract import MonitoredModel, check_model_contract
from initlab.models.mlp import MLP

__all__ = ["ACTIVATIONS", "CNN", "MLP", "MonitoredModel", "check_model_contract"]
