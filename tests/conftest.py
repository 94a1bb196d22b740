"""Shared fixtures: tiny IDX files written to disk, and Hydra composition of the real configs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

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
            import gzip

            (raw / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (raw / name).write_bytes(data)
    return md5


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    root = tmp_path / "data"
    write_tiny_mnist(root)
    return root


# Shrinks any composed config to a few CPU steps on the tiny data.
TINY_OVERRIDES = [
    "data.verify=false", "data.sources=[local]", "data.batch_size=32", "data.eval_batch_size=100",
    "data.train_samples=96",
    "trainer.accelerator=cpu", "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1", "callbacks=none",
]
TINY_CNN = ["model.channels=[4,8]", "model.hidden=16"]
TINY_MLP = ["model.width=32", "model.depth=2"]
NO_OUTPUTS = ["logger=none", "checkpoint=null"]


@pytest.fixture
def make_cfg(tiny_data, tmp_path):
    """compose(overrides) -> the real train config, shrunk, writing under tmp_path."""

    def _make(*overrides: str, tiny: bool = True, outputs: bool = False):
        base = (TINY_OVERRIDES if tiny else []) + ([] if outputs else NO_OUTPUTS)
        if tiny:
            base += TINY_MLP if "model=mlp" in overrides else TINY_CNN
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="train", overrides=[
                f"data.data_dir={tiny_data}", f"output_dir={tmp_path / 'run'}", *base, *overrides,
            ])

    return _make


def pytest_addoption(parser):
    parser.addoption("--all", action="store_true",
                     help="also run the real_data and slow tests (what CI runs)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--all"):
        return
    selected, deselected = [], []
    for item in items:
        heavy = item.get_closest_marker("real_data") or item.get_closest_marker("slow")
        (deselected if heavy else selected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected
