"""Process settings that make a run faster without changing what it computes, and their undoing.

- Lightning's import sets PYTORCH_NVML_BASED_CUDA_CHECK=1; without CUDA, each
  torch.cuda.is_available() then tries to load NVML, and every optimizer step asks. A CPU fit on
  a machine without CUDA sets the variable aside for the fit and restores it after.
- run() leaves the objects alive before training out of the garbage collector's full passes
  while it trains and tests (gc.freeze), and hands them back after, failed or not.
- scripts/train.py imports with the collector off and trains with it back on.
"""

from __future__ import annotations

import gc
import json
import math
import os
from pathlib import Path

import lightning as L
import pytest
import torch

from initlab.module import NVML_CUDA_CHECK
from initlab.train import build, run
from tests.helpers import run_script, tiny_overrides


class ReadCheck(L.Callback):
    def __init__(self):
        self.seen: list[str | None] = []
        self.frozen: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append(os.environ.get(NVML_CUDA_CHECK))
        self.frozen.append(gc.get_freeze_count())


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


class RequireFrozen(L.Callback):
    """Fails the run at a training step where the objects alive before it are not frozen."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if gc.get_freeze_count() < 10_000:  # the libraries alone are hundreds of thousands
            raise AssertionError(f"{gc.get_freeze_count()} objects frozen while training")


@pytest.mark.parametrize("outcome", ["ok", "failed"])
def test_run_keeps_the_libraries_out_of_gc_while_training_and_releases_them(make_cfg, outcome):
    """Frozen while fitting, none frozen after, failed or not: a multirun's next job can free
    this one's data and model."""
    overrides = ["trainer.max_steps=4", "trainer.limit_val_batches=0",
                 "+callbacks.frozen._target_=tests.test_speed_settings.RequireFrozen"]
    if outcome == "failed":
        overrides += ["+callbacks.crash._target_=tests.helpers.CrashAtStep",
                      "+callbacks.crash.step=2"]
    gc.unfreeze()
    cfg = make_cfg(*overrides)
    if outcome == "failed":
        with pytest.raises(RuntimeError, match="simulated crash at step 2"):
            run(cfg)
    else:
        assert not math.isnan(run(cfg))  # trained and tested
    assert gc.get_freeze_count() == 0


class RequireCollectorOn(L.Callback):
    """Fails the run at a training step where the garbage collector is off, or the libraries
    are not frozen out of it."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not gc.isenabled() or gc.get_freeze_count() < 10_000:
            raise AssertionError(f"collector enabled {gc.isenabled()}, "
                                 f"{gc.get_freeze_count()} objects frozen while training")


@pytest.mark.slow  # whole processes: CI runs it
@pytest.mark.parametrize("script_args", [[], ["-m", "seed=0,1"]], ids=["run", "multirun"])
def test_the_script_imports_with_the_collector_off_and_trains_with_it_on(tiny_data, tmp_path,
                                                                         script_args):
    """scripts/train.py turns the collector off for its imports; every job (a multirun's second
    too) must train with it back on and the libraries frozen. What this checks is the second
    part: the first is the speed gain bench.py measures (docs/performance.md)."""
    out = tmp_path / "out"
    folder = (["hydra.sweep.dir=" + str(out)] if script_args else ["hydra.run.dir=" + str(out)])
    proc = run_script("train.py", *script_args, *folder, *tiny_overrides([], tiny_data),
                      "trainer.max_steps=2",
                      "+callbacks.collector._target_=tests.test_speed_settings.RequireCollectorOn")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted(out.rglob("result.json"))
    assert len(results) == (2 if script_args else 1)
    for result in map(json.loads, map(Path.read_text, results)):  # a job's crash: "failed"
        assert result["status"] != "failed", result
        assert result["steps"] == 2, result
