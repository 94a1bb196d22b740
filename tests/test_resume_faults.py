"""Resume after interruption, and faults that must give clear errors before training."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from initlab.checkpointing import AtomicCheckpointIO
from initlab.train import ConfigError, build, run
from tests.helpers import (
    assert_resume_after_two_epochs_matches,
    run_script,
    script_command,
    script_env,
    tiny_overrides,
)


def test_resume_ends_like_an_uninterrupted_run(make_cfg, tmp_path):
    assert_resume_after_two_epochs_matches(make_cfg, tmp_path)


class InterruptAtStep(L.Callback):
    """Ctrl-C after ``step`` optimizer steps, as a user or a scheduler would."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


class RecordBatches(L.Callback):
    def __init__(self):
        self.labels = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.labels.append(batch[1].tolist())


# 3 steps an epoch: interrupted mid-epoch (1, 4) and at an epoch's last step (3)
@pytest.mark.parametrize("interrupt_at", [1, 3, 4])
def test_resume_from_any_step_continues_exactly(make_cfg, tmp_path, interrupt_at):
    common = ["seed=3", "model.dropout=0.3", "augment=noise_skew", "optim=adam",
              "scheduler=onecycle", "trainer.deterministic=true", "robustness=null",
              "trainer.max_epochs=3", "status.stall_accuracy=0"]
    full = tmp_path / "full"
    datamodule, module, trainer = build(make_cfg(*common, f"output_dir={full}", outputs=True))
    seen = RecordBatches()
    trainer.callbacks.append(seen)
    trainer.fit(module, datamodule=datamodule)

    first = tmp_path / "first"
    datamodule, module, trainer = build(make_cfg(*common, f"output_dir={first}", outputs=True))
    before = RecordBatches()
    trainer.callbacks += [before, InterruptAtStep(interrupt_at)]
    with pytest.raises(SystemExit):
        trainer.fit(module, datamodule=datamodule)
    ckpt = first / "checkpoints" / "interrupted.ckpt"
    assert torch.load(ckpt, weights_only=False)["global_step"] == interrupt_at

    resumed = tmp_path / "resumed"
    datamodule, module, trainer = build(make_cfg(*common, f"output_dir={resumed}",
                                                 f"ckpt_path={ckpt}", outputs=True))
    after = RecordBatches()
    trainer.callbacks.append(after)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt))
    # the same batches in the same order, none repeated, none skipped
    assert before.labels[:interrupt_at] + after.labels == seen.labels
    wa = torch.load(full / "checkpoints" / "last.ckpt", weights_only=False)
    wb = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False)
    assert [k for k in wa["state_dict"] if not torch.allclose(wa["state_dict"][k],
                                                              wb["state_dict"][k], atol=1e-6)] == []
    status = "RunStatus"
    assert wa["callbacks"][status]["best_val_acc"] == wb["callbacks"][status]["best_val_acc"]


class RecordValAcc(L.Callback):
    def __init__(self):
        self.at_start, self.accs = None, []

    def on_train_start(self, trainer, pl_module):
        status = next(c for c in trainer.callbacks if c.__class__.__name__ == "RunStatus")
        self.at_start = status.best_val_acc

    def on_validation_epoch_end(self, trainer, pl_module):
        self.accs.append(float(trainer.callback_metrics["val/acc"]))


def test_run_status_survives_a_resume(make_cfg, tmp_path):
    """The best validation accuracy (and so the stall verdict) counts epochs before a resume."""
    common = ["status.stall_accuracy=0", "optim=sgd", "optim.lr=0.5", "scheduler=none"]
    first = tmp_path / "first"
    datamodule, module, trainer = build(make_cfg(*common, "trainer.max_epochs=2",
                                                 f"output_dir={first}", outputs=True))
    before = RecordValAcc()
    trainer.callbacks.append(before)
    trainer.fit(module, datamodule=datamodule)
    ckpt = first / "checkpoints" / "last.ckpt"
    datamodule, module, trainer = build(make_cfg(*common, "trainer.max_epochs=4",
                                                 f"output_dir={tmp_path / 'resumed'}", outputs=True))
    after = RecordValAcc()
    trainer.callbacks.append(after)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt))
    status = next(c for c in trainer.callbacks if c.__class__.__name__ == "RunStatus")
    assert len(before.accs) == 2 and len(after.accs) == 2
    assert after.at_start == max(before.accs)
    assert status.best_val_acc == max(before.accs + after.accs)


def test_a_relaunch_in_the_same_folder_continues_only_its_own_run(make_cfg, tmp_path):
    """A requeued job lands in its folder again: it continues from the folder's newest
    checkpoint; another config in that folder is an error; auto_resume=false starts over."""
    folder = [f"output_dir={tmp_path / 'run'}", "trainer.max_epochs=1"]
    assert build(make_cfg(*folder, outputs=True)) and make_cfg(*folder).ckpt_path is None
    run(make_cfg(*folder, outputs=True))
    again = make_cfg(*folder, outputs=True)
    build(again)
    assert again.ckpt_path == str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    fresh = make_cfg(*folder, "auto_resume=false", outputs=True)
    build(fresh)
    assert fresh.ckpt_path is None
    lr = again.optim.lr
    with pytest.raises(ConfigError, match=rf"holds a checkpoint of a run with another config "
                                          rf"\(optim.lr: {lr} -> {lr * 2}\)"):
        build(make_cfg(*folder, f"optim.lr={lr * 2}", outputs=True))


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", None])
def test_bad_checkpoint_is_a_clear_error(make_cfg, tmp_path, content):
    good = tmp_path / "good"
    run(make_cfg("trainer.max_epochs=1", f"output_dir={good}", outputs=True))
    bad = tmp_path / "bad.ckpt"
    data = (good / "checkpoints" / "last.ckpt").read_bytes()
    bad.write_bytes(data[: len(data) // 2] if content is None else content)
    with pytest.raises(ConfigError, match=r"ckpt_path='.*bad.ckpt' is not a readable checkpoint"):
        build(make_cfg(f"ckpt_path={bad}"))


def test_missing_checkpoint_is_a_clear_error(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"ckpt_path='.*nope.ckpt' does not exist"):
        build(make_cfg(f"ckpt_path={tmp_path / 'nope.ckpt'}"))


def test_output_dir_under_a_file_is_a_clear_error(make_cfg, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")  # a file where a folder should be: unwritable for root too
    with pytest.raises(ConfigError, match=r"output_dir='.*afile/run' is not writable"):
        build(make_cfg(f"output_dir={blocker / 'run'}"))


def test_full_disk_is_a_clear_error(make_cfg, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 2**20, 2**20))
    with pytest.raises(ConfigError, match=r"has 1 MiB free, less than the 200 MiB a run needs"):
        build(make_cfg())


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_saves_a_checkpoint_and_resumes(tiny_data, tmp_path, sig):
    out = tmp_path / "run"
    # the whole tiny training set (550) in batches of 8: an epoch of 69 steps to stop inside
    args = [*tiny_overrides((), tiny_data), "data.train_samples=null", "data.batch_size=8",
            "robustness=null", "scheduler=none", "status.stall_accuracy=0"]
    # Ctrl-C as a terminal's foreground job gets it: a shell starts background jobs with SIGINT
    # ignored (a CI script run with '&'), and Python keeps an ignored SIGINT ignored
    proc = subprocess.Popen(script_command("train.py", f"hydra.run.dir={out}", *args,
                                           "trainer.max_epochs=400"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=script_env(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not (out / "checkpoints" / "last.ckpt").exists() and time.time() < deadline:
        time.sleep(0.2)  # wait until training is under way (one epoch done)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == {signal.SIGINT: 130, signal.SIGTERM: 143}[sig], output[-3000:]
    assert json.loads((out / "result.json").read_text())["status"] == "interrupted"
    ckpt = out / "checkpoints" / "interrupted.ckpt"
    assert ckpt.exists(), output[-2000:]
    assert not list((out / "checkpoints").glob(".*.tmp"))  # nothing half written
    checkpoint = torch.load(ckpt, weights_only=False)
    step = checkpoint["global_step"]
    assert step > 0 and f"interrupted at step {step}" in output
    resumed = run_script("train.py", *args, f"trainer.max_epochs={checkpoint['epoch'] + 2}",
                         f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'resumed'}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    result = json.loads((tmp_path / "resumed" / "result.json").read_text())
    assert result["steps"] > step and result["status"] == "ok"


@pytest.fixture
def staging_elsewhere(tmp_path, monkeypatch):
    """$TMPDIR on another filesystem than the run's (as a cluster's node-local /tmp is)."""
    other = Path("/dev/shm")
    if sys.platform != "linux" or not other.is_dir() or \
            other.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test's temporary folder")
    staging = Path(tempfile.mkdtemp(dir=other))
    monkeypatch.setattr(tempfile, "tempdir", str(staging))
    yield staging
    shutil.rmtree(staging)


@pytest.mark.parametrize("io_class, keeps_previous", [(TorchCheckpointIO, False),
                                                      (AtomicCheckpointIO, True)])
def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch,
                                                                 staging_elsewhere, io_class,
                                                                 keeps_previous):
    """The run's disk fills while a new checkpoint's bytes go into the run's folder. Lightning's
    save stages the file in $TMPDIR and, across filesystems, copies it over the old checkpoint
    (shutil's copy, os.sendfile on Linux): the old one is lost. AtomicCheckpointIO writes beside
    it (the write shows as a failed fsync) and renames only a whole file: the old one stays."""
    path = tmp_path / "last.ckpt"
    io_class().save_checkpoint({"step": 1}, path)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "sendfile", disk_full)
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        io_class().save_checkpoint({"step": 2, "weights": torch.zeros(1000)}, path)
    monkeypatch.undo()
    if keeps_previous:
        assert torch.load(path, weights_only=True) == {"step": 1}
        assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary left
    else:
        assert path.stat().st_size == 0  # truncated by the copy that failed


def test_checkpoint_writes_are_timed_and_storage_options_refused(tmp_path):
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, tmp_path / "a" / "last.ckpt")
    assert torch.load(tmp_path / "a" / "last.ckpt", weights_only=True) == {"step": 1}
    assert io.seconds > 0
    with pytest.raises(TypeError, match=r"AtomicCheckpointIO takes no storage_options \(got \{'x': 1\}\)"):
        io.save_checkpoint({"step": 2}, tmp_path / "b.ckpt", storage_options={"x": 1})
