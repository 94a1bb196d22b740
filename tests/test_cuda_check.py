"""The CUDA availability check a CPU fit runs with.

Lightning's import sets PYTORCH_NVML_BASED_CUDA_CHECK=1; without CUDA, each
torch.cuda.is_available() then tries to load NVML, and every optimizer step asks. A CPU fit on
a machine without CUDA sets the variable aside for the fit and restores it after.
"""

from __future__ import annotations

import os

import lightning as L
import torch

from initlab.module import NVML_CUDA_CHECK
from initlab.train import build


class ReadCheck(L.Callback):
    def __init__(self):
        self.seen: list[str | None] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append(os.environ.get(NVML_CUDA_CHECK))


def test_a_cpu_fit_runs_with_the_direct_check_and_restores_lightnings(make_cfg, monkeypatch):
    monkeypatch.setenv(NVML_CUDA_CHECK, "1")  # as Lightning's import leaves it
    for fit in range(2):  # a second fit in the same process finds the variable restored
        datamodule, module, trainer = build(make_cfg("trainer.max_steps=3",
                                                     "trainer.limit_val_batches=0"))
        reader = ReadCheck()
        trainer.callbacks.append(reader)
        trainer.fit(module, datamodule=datamodule)
        assert len(reader.seen) == 3, fit
        if torch.cuda.is_available():  # a CUDA machine keeps the fork-safe check (and caches it)
            assert reader.seen == ["1"] * 3
        else:
            assert reader.seen == [None] * 3
        assert os.environ.get(NVML_CUDA_CHECK) == "1"
