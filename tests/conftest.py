"""Shared fixtures: tiny IDX files written to disk, and the real configs composed and shrunk."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import NO_OUTPUTS, compose_config, tiny_overrides, write_tiny_mnist


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    root = tmp_path / "data"
    write_tiny_mnist(root)
    return root


@pytest.fixture
def make_cfg(tiny_data, tmp_path):
    """make_cfg(*overrides) -> the real train config writing to tmp_path/run; ``tiny``: shrunk
    by ``tiny_overrides`` on the tiny data; ``outputs``: with a logger and checkpoints."""

    def _make(*overrides: str, tiny: bool = True, outputs: bool = False):
        if tiny:
            shrink = tiny_overrides(overrides, tiny_data, outputs)
        else:  # the data is the tiny files unless the test names other
            shrink = [f"data.data_dir={tiny_data}", *([] if outputs else NO_OUTPUTS)]
        return compose_config(f"output_dir={tmp_path / 'run'}", *shrink, *overrides)

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
