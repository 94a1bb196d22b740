"""Helpers shared by the tests: tiny IDX files with learnable fake digits."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import lightning as L
import numpy as np

from initlab.data.sources import idx_bytes

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TINY_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def make_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable fake digits: a bright 6x6 block whose position encodes the label, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        r, c = divmod(int(label), 5)
        images[i, 4 + 10 * r: 10 + 10 * r, 2 + 5 * c: 8 + 5 * c] = 250
    return images, labels


def write_tiny_mnist(root: Path, n_train: int = 600, n_test: int = 200, gz: bool = False) -> dict:
    """Write the four IDX files in torchvision's layout; return their md5s."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    train_x, train_y = make_digits(n_train, 0)
    test_x, test_y = make_digits(n_test, 1)
    md5 = {}
    for name, array in zip(TINY_FILES, (train_x, train_y, test_x, test_y), strict=False):
        data = idx_bytes(array)
        md5[name] = hashlib.md5(data).hexdigest()
        if gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (raw / name).write_bytes(data)
    return md5


class CrashAtStep(L.Callback):
    """A crash inside training (not a configuration error) at optimizer step ``step``; None:
    never. Named by ``_target_`` in the tests' sweeps."""

    def __init__(self, step: int | None = None):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.step is not None and trainer.global_step == self.step:
            raise RuntimeError(f"simulated crash at step {self.step}")
