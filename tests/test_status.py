"""Runs that fail as science: diverged and stalled runs are recorded, the sweep goes on."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from initlab.train import run
from tests.helpers import ROOT


def test_diverged_run_stops_early_and_says_where(make_cfg, tmp_path):
    score = run(make_cfg("optim=sgd", "optim.lr=1e12", "scheduler=none", "trainer.max_epochs=5",
                         "status.check_every_n_steps=1"))
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert math.isnan(score) and result["score"] is None
    assert result["status"] == "diverged"
    assert result["diverged_layer"] in {"conv1", "conv2", "fc1", "out"}
    assert 0 <= result["diverged_step"] <= result["steps"] < 15  # stopped long before 5 epochs


def test_stalled_run_is_marked(make_cfg, tmp_path):
    score = run(make_cfg("init=zeros", "optim=sgd", "optim.lr=0.01", "status.stall_accuracy=0.5"))
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "stalled" and result["best_val_acc"] < 0.5
    assert score == result["score"] and 0 <= score <= 1


def test_healthy_run_result(make_cfg, tmp_path):
    run(make_cfg("trainer.max_epochs=2", "status.stall_accuracy=0.0"))
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "ok" and result["steps"] == 6 and result["epochs"] == 2
    assert result["wall_time_s"] > 0 and "test/acc" in result["metrics"]
    assert result["score"] == result["metrics"]["test/acc"]


def test_multirun_survives_divergence_and_exits_zero(tiny_data, tmp_path):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/train.py"), "-m", "init=zeros,xavier",
         "optim=sgd", "optim.lr=1e12,0.01", "scheduler=none", f"hydra.sweep.dir={sweep}",
         f"data.data_dir={tiny_data}", "data.verify=false", "data.sources=[local]",
         "data.train_samples=96", "data.batch_size=32", "model.channels=[4,8]", "model.hidden=16",
         "trainer.accelerator=cpu", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
         "status.check_every_n_steps=1", "callbacks=none", "logger=none", "checkpoint=null",
         "robustness=null"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    statuses = {}
    for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
        cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
        statuses[(cfg.init.scheme == "zeros", cfg.optim.lr > 1)] = json.loads(
            (job / "result.json").read_text())["status"]
    assert len(statuses) == 4
    assert statuses[(False, True)] == "diverged"
    # zeros: every unit stays identical; a huge step only inflates the output bias (finite)
    assert statuses[(True, False)] == statuses[(True, True)] == "stalled"


def test_config_errors_still_fail_a_sweep(tiny_data, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/train.py"), "-m", "optim.lr=0.01,-1",
         f"hydra.sweep.dir={tmp_path}", f"data.data_dir={tiny_data}", "data.sources=[local]",
         "data.verify=false", "trainer.max_steps=1", "trainer.accelerator=cpu"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "optim.lr=-1 is invalid" in proc.stderr


@pytest.mark.parametrize("bad", ["robustness.blur=[1]", "robustness.noise=[-1]"])
def test_bad_robustness_values_are_named(make_cfg, bad):
    from initlab.train import build

    with pytest.raises(ValueError, match="robustness.blur is unknown|augment.noise_std=-1"):
        build(make_cfg(bad.replace("robustness.blur", "+robustness.blur")))


def test_run_without_validation_is_not_called_stalled(make_cfg, tmp_path):
    run(make_cfg("trainer.max_steps=2", "status.stall_accuracy=1.0"))
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "ok" and result["best_val_acc"] is None
