"""Two-process DDP on CPU (gloo): metrics reduced across ranks, one run folder, one events file."""

from __future__ import annotations

import json

import pytest
import torch

from initlab.data.augment import Augment
from tests.helpers import CORRUPT_KEYS, checkpoint_test_accuracy, run_script


def test_trainer_ddp_takes_the_devices_there_are(make_cfg):
    """trainer=ddp asks for devices=auto: one CPU process here, every GPU on a GPU machine (not
    a fixed 2, which failed on a one-GPU machine)."""
    from hydra.utils import instantiate
    from lightning.pytorch.strategies import DDPStrategy

    cfg = make_cfg("trainer=ddp")
    assert cfg.trainer.devices == "auto"
    trainer = instantiate(cfg.trainer)
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.num_devices == 1
    two = instantiate(make_cfg("trainer=ddp", "trainer.devices=2").trainer)
    assert two.num_devices == 2


@pytest.mark.slow
def test_two_process_ddp_run(tiny_data, tmp_path):
    out = tmp_path / "runs" / "ddp"
    proc = run_script(
        "train.py", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
        f"hydra.run.dir={out}", f"data.data_dir={tiny_data}", "data.verify=false",
        "data.sources=[local]", "data.batch_size=16", "data.eval_batch_size=30",
        "model.channels=[4,8]", "model.hidden=16", "trainer.max_epochs=2", "model.dropout=0.3",
        "trainer.enable_progress_bar=false", "callbacks=default", "status.stall_accuracy=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["ddp"]  # one run folder
    assert len(list(out.glob("events.out.tfevents.*"))) == 1
    assert (out / "init_stats.json").exists() and (out / ".hydra" / "config.yaml").exists()
    result = json.loads((out / "result.json").read_text())
    # each rank saw half the 550 training examples: 18 steps of 16 per epoch, not 35
    assert result["steps"] == 2 * -(-275 // 16)
    # corrupted test sets: every rank corrupts the whole split and evaluates its shard,
    # accuracies reduced over both (checked below against one process)
    assert CORRUPT_KEYS <= set(result["metrics"])
    assert all(0 <= result["metrics"][k] <= 1 for k in CORRUPT_KEYS)

    # the test accuracy reduced over 2 ranks = one process evaluating the same weights
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    # each rank draws its own dropout masks, and each rank's stream is saved for a resume
    rng = checkpoint["rng_states_per_rank"]["torch"]
    assert rng.shape[0] == 2 and not torch.equal(rng[0], rng[1])
    accuracy = checkpoint_test_accuracy(out / "checkpoints" / "last.ckpt", tiny_data,
                                        channels=(4, 8), hidden=16)
    assert result["metrics"]["test/acc"] == pytest.approx(accuracy, abs=1e-6)
    # the corrupted images are those one process corrupts (the run's seed, 0)
    for key, corrupt in (("test_corrupt/skew_45/acc", Augment(skew_degrees=45)),
                         ("test_corrupt/noise_0.5/acc", Augment(noise_std=0.5))):
        alone = checkpoint_test_accuracy(out / "checkpoints" / "last.ckpt", tiny_data,
                                         corrupt=corrupt, channels=(4, 8), hidden=16)
        assert result["metrics"][key] == pytest.approx(alone, abs=1e-6)
