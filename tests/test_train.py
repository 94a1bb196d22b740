"""The real configs composed with Hydra and trained for a few steps on tiny data."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from initlab.train import build, run
from tests.helpers import CONF, ROOT

INITS = sorted(p.stem for p in (CONF / "init").glob("*.yaml"))
OPTIMS = sorted(p.stem for p in (CONF / "optim").glob("*.yaml"))


def fit_metrics(cfg) -> dict[str, float]:
    datamodule, module, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_every_group_has_the_documented_options():
    assert INITS == sorted(["default", "zeros", "constant", "uniform", "normal", "standard", "xavier",
                            "xavier_normal", "lecun", "he", "orthogonal"])
    assert set(OPTIMS) >= {"sgd", "momentum", "adagrad", "rmsprop", "adam"}


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("optim", OPTIMS)
def test_every_init_and_optim_trains(make_cfg, init, optim):
    metrics = fit_metrics(make_cfg(f"init={init}", f"optim={optim}"))
    assert "train/loss" in metrics and "val/acc" in metrics


@pytest.mark.parametrize("override", [
    "model=mlp", "model.activation=tanh", "model.activation=sigmoid", "model.activation=softsign",
    "model.activation=leaky_relu", "model.activation=elu", "model.dropout=0.5",
    "model.batchnorm=true", "scheduler=none", "scheduler=cosine", "trainer=cpu",
    "init=xavier init.gain=auto", "init=xavier init.mode=fan_in", "channels_last=true", "compile=true",
    "trainer.precision=bf16-mixed",
])
def test_other_options_train(make_cfg, override):
    assert "val/acc" in fit_metrics(make_cfg(*override.split()))


def test_l1_l2_are_added_and_logged(make_cfg):
    metrics = fit_metrics(make_cfg("l1=1e-4", "l2=1e-3"))
    assert metrics["train/l1"] > 0 and metrics["train/l2"] > 0
    assert metrics["train/loss"] == pytest.approx(
        metrics["train/ce"] + metrics["train/l1"] + metrics["train/l2"], rel=1e-5)


def test_same_seed_same_metrics(make_cfg):
    first = fit_metrics(make_cfg("seed=3", "trainer.max_epochs=2"))
    second = fit_metrics(make_cfg("seed=3", "trainer.max_epochs=2"))
    other = fit_metrics(make_cfg("seed=4", "trainer.max_epochs=2"))
    assert first == second
    assert first["train/loss"] != other["train/loss"]


def test_unknown_option_lists_the_choices(make_cfg):
    with pytest.raises(MissingConfigException, match="Available options in 'init'"):
        make_cfg("init=nope")


@pytest.mark.parametrize("override,message", [
    ("optim.lr=-1", r"optim.lr=-1 is invalid: it must be a number > 0"),
    ("optim=momentum optim.momentum=-0.5", r"optim: Invalid momentum value: -0.5"),
    ("model.dropout=1.5", r"model.dropout=1.5 is invalid: it must be in \[0, 1\)"),
    ("data.batch_size=0", r"data.batch_size=0 is invalid: it must be an integer >= 1"),
    ("model.activation=swish", r"model.activation='swish' is not supported; allowed: \["),
    ("l2=-0.1", r"l2=-0.1 is invalid"),
    ("init=xavier init.gain=huge", r"init.gain='huge' is invalid"),
    ("init.gain=2", r"init.scheme='default' takes no gain"),
    ("channels_last=maybe", r"channels_last='maybe' is invalid; allowed: \['auto', True, False\]"),
])
def test_bad_values_fail_before_training(make_cfg, override, message):
    with pytest.raises(Exception, match=message):  # Hydra wraps constructor errors
        build(make_cfg(*override.split()))


def test_unknown_key_is_refused(make_cfg):
    with pytest.raises(ConfigCompositionException, match="model.dropuot"):
        make_cfg("model.dropuot=0.1")


def test_run_returns_test_accuracy_and_writes_outputs(make_cfg, tmp_path):
    cfg = make_cfg("trainer.max_epochs=3", outputs=True)
    accuracy = run(cfg)
    assert 0.0 <= accuracy <= 1.0
    out = tmp_path / "run"
    assert (out / "checkpoints" / "last.ckpt").exists()
    assert len(list((out / "checkpoints").glob("best-*.ckpt"))) == 1
    assert list(out.glob("events.out.tfevents.*"))


def _run_script(*args: str, cwd=ROOT, env_extra=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, str(ROOT / "scripts/train.py"), *args], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=300)


def test_help_lists_groups_and_options():
    out = _run_script("--help").stdout
    for group, option in [("init", "xavier_normal"), ("optim", "rmsprop"), ("model", "mlp"),
                          ("scheduler", "onecycle"), ("trainer", "gpu"), ("logger", "none"),
                          ("data", "mnist"), ("callbacks", "none")]:
        assert f"{group}:" in out and option in out, (group, option)


def test_train_script_end_to_end(tiny_data, tmp_path):
    out = tmp_path / "script_run"
    proc = _run_script(f"hydra.run.dir={out}", f"data.data_dir={tiny_data}", "data.verify=false",
                       "data.sources=[local]", "trainer.max_steps=10", "trainer.accelerator=cpu",
                       "model.channels=[4,8]", "model.hidden=16", "init=xavier", "optim=adam")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test accuracy: " in proc.stdout
    assert f"tensorboard --logdir {out}" in proc.stdout
    assert (out / ".hydra" / "config.yaml").exists()
    assert (out / "checkpoints" / "last.ckpt").exists()
    assert list(out.glob("events.out.tfevents.*"))
    # the process's first run: its clock starts at the process start, imports included
    t = json.loads((out / "result.json").read_text())["timings_s"]
    assert 0 < t["startup"] < t["first_step"] < t["total"]


def test_train_script_bad_value_exits_nonzero_with_message(tiny_data, tmp_path):
    proc = _run_script(f"hydra.run.dir={tmp_path}", f"data.data_dir={tiny_data}",
                       "data.sources=[local]", "optim.lr=-1")
    assert proc.returncode != 0
    assert "optim.lr=-1 is invalid" in proc.stderr


def test_progress_in_a_log_file_is_plain_lines(tiny_data, tmp_path):
    """stdout not a terminal: a line per refresh, no carriage-return redraws."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/train.py"), f"hydra.run.dir={tmp_path / 'run'}",
         f"data.data_dir={tiny_data}", "data.verify=false", "data.sources=[local]",
         "data.train_samples=96", "data.batch_size=16", "model.channels=[4,8]", "model.hidden=16",
         "trainer.accelerator=cpu", "trainer.max_epochs=2", "progress_bar.refresh_rate=2",
         "trainer.log_every_n_steps=2",
         "callbacks=none", "robustness=null"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "\r" not in proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    # 6 batches an epoch, a line every 2: 3 per epoch, with the training loss
    assert [line.split("  ")[:2] for line in lines] == [
        [f"epoch {e}", f"batch {b}/6"] for e in (0, 1) for b in (2, 4, 6)]
    assert all("train/ce" in line for line in lines)
    assert proc.stdout.count("validation at step ") == 2


def _short_script_run(tiny_data, out, *overrides):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts/train.py"), f"hydra.run.dir={out}",
         f"data.data_dir={tiny_data}", "data.verify=false", "data.sources=[local]",
         "data.train_samples=96", "data.batch_size=16", "model.channels=[4,8]", "model.hidden=16",
         "trainer.accelerator=cpu", "callbacks=none", "robustness=null", *overrides],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.parametrize(("max_steps", "every"), [(8, 2), (9, 3)])
def test_progress_total_is_the_epochs_batches_with_max_steps(tiny_data, tmp_path, max_steps,
                                                             every):
    """max_epochs=-1: Lightning's own total is the steps left to max_steps, shrinking as the
    epoch runs; the line shows the epoch's batches (6) and the step out of max_steps."""
    proc = _short_script_run(tiny_data, tmp_path / "run", "trainer.max_epochs=-1",
                             f"trainer.max_steps={max_steps}", f"progress_bar.refresh_rate={every}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line.split("  ")[:3] for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    expected = [[f"epoch {(s - 1) // 6}", f"batch {s % 6 or 6}/6", f"step {s}/{max_steps}"]
                for s in range(every, max_steps + 1) if (s % 6 or 6) % every == 0]
    assert lines == expected


@pytest.mark.parametrize(("max_steps", "every"), [(6, 2), (9, 3)])
def test_the_console_says_each_event_once(tiny_data, tmp_path, max_steps, every):
    """A short run's console: the devices, a progress line per refresh, a line per
    validation, the verdict, the metrics and where to look; nothing twice, no library tip or
    warning (train.log keeps those, and every console line)."""
    out = tmp_path / "run"
    proc = _short_script_run(tiny_data, out, "trainer.max_epochs=-1",
                             f"trainer.max_steps={max_steps}", f"progress_bar.refresh_rate={every}",
                             "trainer.log_every_n_steps=50")

    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (proc.stdout + proc.stderr).splitlines()
    assert len(lines) == len(set(lines)), lines  # each event once
    progress = [line for line in lines if line.startswith("epoch ")]
    validations = [line for line in lines if line.startswith("validation at step ")]
    rest = [line for line in lines if line not in progress + validations]
    assert len(progress) == sum((s % 6 or 6) % every == 0 for s in range(1, max_steps + 1))
    # at each epoch end, and at max_steps when it stops an epoch midway
    assert len(validations) == len({s for s in range(1, max_steps + 1) if s % 6 == 0}
                                   | {max_steps})
    assert [line.split(":")[0].split(" (")[0] for line in rest] == [
        "GPU available", "TPU available", "status", "test accuracy", "inspect with"]
    assert len(lines) == len(progress) + len(validations) + 5
    log = (out / "train.log").read_text()
    assert all(line in log for line in lines)
    # what stayed off the console is in the log
    assert "Tip:" in log and "Tip:" not in proc.stdout + proc.stderr
    assert "site-packages" not in proc.stdout + proc.stderr
