"""Every named experiment composes with every group's 'off' option and trains a few steps."""

from __future__ import annotations

import json

import pytest

from initlab.train import run
from tests.helpers import CONF

# every experiment, the lessons' shared base (lesson/_base, not one to run) excepted
EXPERIMENTS = sorted(str(p.relative_to(CONF / "experiment").with_suffix(""))
                     for p in (CONF / "experiment").rglob("*.yaml") if not p.stem.startswith("_"))


@pytest.mark.parametrize("off", ["callbacks=none", "logger=none", "checkpoint=null"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_runs(make_cfg, tmp_path, experiment, off):
    composed = make_cfg(f"experiment={experiment}", off, tiny=False, outputs=True)
    shrink = ["trainer.max_steps=3", "trainer.val_check_interval=null", "data.train_samples=96",
              "data.batch_size=32", "data.verify=false", "data.sources=[local]",
              "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]
    shrink += (["model.width=32", "model.depth=2"] if composed.model._target_.endswith("MLP")
               else ["model.channels=[4,8]", "model.hidden=16"])
    if composed.robustness is not None:
        shrink += ["robustness.noise=[0.3]", "robustness.skew=[20]"]
    run(make_cfg(f"experiment={experiment}", off, *shrink, tiny=False, outputs=True))
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] in ("ok", "stalled") and result["steps"] == 3
