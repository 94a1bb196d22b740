from initlab.data.mnist import MNISTDataModule, read_idx
from initlab.data.shapeset import ShapesetDataModule
from initlab.data.sources import DataError, ensure_mnist

__all__ = ["DataError", "MNISTDataModule", "ShapesetDataModule", "ensure_mnist", "read_idx"]
