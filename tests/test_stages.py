"""Every forward pass happens inside Lightning's stages: a CPU trap for what fails on a GPU.

Lightning's ``Strategy.teardown`` moves the model to the CPU at the end of every stage; on a GPU a
forward pass after it meets data left on the GPU. ``TeardownTrap`` makes that visible on CPU.
"""

from __future__ import annotations

import pytest
import torch

from initlab.train import build
from tests.helpers import TeardownTrap

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

