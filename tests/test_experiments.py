"""Every named experiment composes with every group's 'off' option and trains a few steps."""

from __future__ import annotations

import json

import pytest

from initlab.train import build, run
from tests.helpers import CONF, matrix

# every experiment, the lessons' shared base (lesson/_base, not one to run) excepted
EXPERIMENTS = sorted(str(p.relative_to(CONF / "experiment").with_suffix(""))
                     for p in (CONF / "experiment").rglob("*.yaml") if not p.stem.startswith("_"))
OFF = ["callbacks=none", "logger=none", "checkpoint=null"]


def shrunk(make_cfg, experiment: str, off: str):
    """The experiment as composed, then shrunk in its own model family to 3 steps of 32."""
    composed = make_cfg(f"experiment={experiment}", off, tiny=False, outputs=True)
    shrink = ["trainer.max_steps=3", "trainer.val_check_interval=null", "data.train_samples=96",
              "data.batch_size=32", "data.verify=false", "data.sources=[local]",
              "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]
    shrink += (["model.width=32", "model.depth=2"] if composed.model._target_.endswith("MLP")
               else ["model.channels=[4,8]", "model.hidden=16"])
    if composed.robustness is not None:
        shrink += ["robustness.noise=[0.3]", "robustness.skew=[20]"]
    return make_cfg(f"experiment={experiment}", off, *shrink, tiny=False, outputs=True)


# fast: each experiment once, the off options taken in turn (each about seven times)
@pytest.mark.parametrize(("experiment", "off"), matrix(
    EXPERIMENTS, OFF, fast={(e, OFF[i % len(OFF)]) for i, e in enumerate(EXPERIMENTS)}))
def test_experiment_composes_and_builds(make_cfg, experiment, off):
    """What can go wrong before training (a key the off option removed, a value the checks
    refuse) goes wrong in build: every pair is built; tests below train each."""
    cfg = make_cfg(f"experiment={experiment}", off, "data.verify=false", "data.sources=[local]",
                   "trainer.accelerator=cpu", tiny=False, outputs=True)  # composed once: as is
    _, _, trainer = build(cfg)
    # the monitors built are the ones the composed config names (the experiment's own stay
    # under callbacks=none), and the logger and checkpoints are off when asked
    named = sorted(node._target_ for node in cfg.callbacks.values() if node is not None)
    assert sorted(f"{type(c).__module__.rsplit('.', 1)[0]}.{type(c).__name__}"
                  for c in trainer.callbacks if type(c).__module__.startswith("initlab.monitors")) \
        == named
    assert off != "logger=none" or trainer.logger is None
    assert off != "checkpoint=null" or trainer.checkpoint_callback is None

@pytest.mark.slow
@pytest.mark.parametrize("off", OFF)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_runs(make_cfg, tmp_path, experiment, off):
    run(shrunk(make_cfg, experiment, off))
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] in ("ok", "stalled") and result["steps"] == 3
