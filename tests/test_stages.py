"""Every forward pass happens inside Lightning's stages: a CPU trap for what fails on a GPU.

Lightning's ``Strategy.teardown`` moves the model to the CPU at the end of every stage; on a GPU a
forward pass after it meets data left on the GPU. ``TeardownTrap`` makes that visible on CPU.
"""

from __future__ import annotations

import json

import pytest
import torch

from initlab.train import build, run
from tests.helpers import CORRUPT_KEYS, TeardownTrap, read_events

TRAP = "+callbacks.trap._target_=tests.helpers.TeardownTrap"


def test_the_trap_fails_a_forward_between_stages(make_cfg):
    datamodule, module, trainer = build(make_cfg(TRAP))
    trap = TeardownTrap.last
    trainer.fit(module, datamodule=datamodule)
    assert trap.teardowns == 1 and trap.forwards > 0
    x = torch.zeros(2, 1, 28, 28)
    with pytest.raises(RuntimeError, match=r"Conv2d forward after Lightning's Strategy.teardown"):
        module(x)
    forwards = trap.forwards
    trainer.test(module, datamodule=datamodule, verbose=False)  # placed again: no error inside
    assert trap.teardowns == 2 and trap.forwards > forwards
    with pytest.raises(RuntimeError, match="Strategy.teardown"):
        module(x)


def test_the_default_command_finishes_with_the_trap(make_cfg, tmp_path):
    """Test and robustness on (the defaults), monitors on: every forward inside a stage."""
    cfg = make_cfg("callbacks=default", TRAP, "status.stall_accuracy=0", outputs=True)
    assert cfg.test and set(cfg.robustness) == {"noise", "skew"}
    accuracy = run(cfg)
    trap = TeardownTrap.last
    assert trap.teardowns == 2  # fit, then test
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "ok", result.get("error")
    metrics = result["metrics"]
    assert metrics["test/acc"] == accuracy and "test/loss" in metrics
    assert CORRUPT_KEYS <= set(metrics)
    assert not [k for k in metrics if "dataloader_idx" in k]
    tags = set(read_events(tmp_path / "run").Tags()["scalars"])
    assert CORRUPT_KEYS | {"test/acc", "test/loss"} <= tags  # TensorBoard gets the same names
    assert not [t for t in tags if "dataloader_idx" in t]
