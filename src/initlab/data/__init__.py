from initlab.data.mnist import MNISTDataModule, read_idx
from initlab.data.sources import DataError, ensure_mnist

__all__ = ["DataError", "MNISTDataModule", "ensure_mnist", "read_idx"]
