"""Shared fixtures: tiny IDX files written to disk, and Hydra composition of the real configs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from tests.helpers import CONF, write_tiny_mnist


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
    """``gpu`` tests are skipped, with the reason, where CUDA is absent (never dropped silently);
    ``real_data`` and ``slow`` tests are deselected unless ``--all`` or a ``-m`` expression
    picks tests by marker itself (``pytest -m gpu`` runs every GPU test)."""
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason=f"needs a CUDA GPU: torch {torch.__version__} sees none "
                                       "(torch.cuda.is_available() is False)")
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(skip)
    if config.getoption("--all") or config.getoption("markexpr"):
        return
    selected, deselected = [], []
    for item in items:
        heavy = item.get_closest_marker("real_data") or item.get_closest_marker("slow")
        (deselected if heavy else selected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected
