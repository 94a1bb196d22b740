"""The CUDA generator's state from a checkpoint reaches the GPU the run trains on.

Lightning restores a checkpoint before it moves the model to its device, so a restore that asks
the module for its device gets the CPU. These tests run on the CPU, with torch.cuda's two calls
stood in by a recorder that reads the device as torch's own ``set_rng_state`` does.
"""

from __future__ import annotations

import pytest
import torch

from initlab.train import build
from tests.helpers import StopAfterEpochs


@pytest.fixture
def cuda_rng_calls(monkeypatch):
    calls = []

    def set_rng_state(new_state, device="cuda"):
        device = torch.device(device) if isinstance(device, str) else device
        calls.append((new_state, device.type, device.index))  # torch reads device.index too

    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    return calls


def with_cuda_available(monkeypatch, module, *hooks: str) -> None:
    """CUDA reads as available inside these hooks of ``module`` only (elsewhere torch.optim
    would go on to query the missing driver)."""
    for name in hooks:
        hook = getattr(module, name)

        def wrapped(*args, _hook=hook, **kwargs):
            with monkeypatch.context() as patch:
                patch.setattr(torch.cuda, "is_available", lambda: True)
                return _hook(*args, **kwargs)

        setattr(module, name, wrapped)


def _checkpoint_with_a_cuda_state(make_cfg, tmp_path):
    datamodule, module, trainer = build(make_cfg(f"output_dir={tmp_path / 'first'}",
                                                 "trainer.max_epochs=2", outputs=True))
    trainer.callbacks.append(StopAfterEpochs(1))
    trainer.fit(module, datamodule=datamodule)
    path = tmp_path / "first" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    cuda_state = torch.arange(16, dtype=torch.uint8)
    checkpoint["rng_states"]["cuda"] = cuda_state
    torch.save(checkpoint, path)
    return path, checkpoint, cuda_state


def test_a_resume_sets_the_cuda_generator_on_the_module_device_at_fit_start(
        make_cfg, tmp_path, cuda_rng_calls, monkeypatch):
    path, checkpoint, cuda_state = _checkpoint_with_a_cuda_state(make_cfg, tmp_path)
    # a resume whose trainer runs on the CPU: nothing to set, and no device=None reaches torch
    datamodule, module, trainer = build(make_cfg(f"output_dir={tmp_path / 'resumed'}",
                                                 "trainer.max_epochs=2", outputs=True))
    with_cuda_available(monkeypatch, module, "on_load_checkpoint", "on_fit_start")
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(path))
    assert trainer.global_step == 2 * trainer.num_training_batches
    assert cuda_rng_calls == []
    # the same restore with the module on a GPU when the fit starts: set there, once
    module.on_load_checkpoint(checkpoint)
    assert cuda_rng_calls == []  # not yet: Lightning has not moved the model
    module._device = torch.device("cuda", 0)  # where strategy.setup would have put it
    module._restore_cuda_rng()
    module._restore_cuda_rng()
    assert len(cuda_rng_calls) == 1
    state, device_type, index = cuda_rng_calls[0]
    assert torch.equal(state, cuda_state) and (device_type, index) == ("cuda", 0)
