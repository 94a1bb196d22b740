"""The real configs composed with Hydra and trained for a few steps on tiny data."""

from __future__ import annotations

import json
import math

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from lightning.pytorch.accelerators import CPUAccelerator
from torch import nn

from initlab.models import MLP
from initlab.train import build, run
from tests.helpers import CONF, fit, run_script, tiny_overrides

INITS = sorted(p.stem for p in (CONF / "init").glob("*.yaml"))
OPTIMS = sorted(p.stem for p in (CONF / "optim").glob("*.yaml"))


def fit_metrics(cfg) -> dict[str, float]:
    _, _, trainer = fit(cfg)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_every_group_has_the_documented_options():
    assert INITS == sorted(["default", "zeros", "constant", "uniform", "normal", "standard", "xavier",
                            "xavier_normal", "lecun", "he", "orthogonal"])
    assert set(OPTIMS) >= {"sgd", "momentum", "adagrad", "rmsprop", "adam"}


def _layers(module, kind) -> list:
    return [layer for layer in module.model.modules() if isinstance(layer, kind)]


# Each option's own code path, trained, and what of it must be in effect afterwards. Init
# options act at build time (tests/test_init.py); every optimizer and scheduler trains in
# tests/test_optim_in_effect.py; channels_last in tests/test_memory_format.py.
OPTIONS = {
    "model=mlp": lambda module, trainer: isinstance(module.model, MLP),
    **{f"model.activation={name}": lambda module, trainer, name=name:
       module.model.activation == name for name in ("tanh", "sigmoid", "softsign", "leaky_relu",
                                                     "elu")},
    "model.dropout=0.5": lambda module, trainer: [d.p for d in _layers(module, nn.Dropout)] == [0.5],
    "model.batchnorm=true": lambda module, trainer: len(_layers(module, nn.BatchNorm2d)) == 2,
    "trainer=cpu": lambda module, trainer: isinstance(trainer.accelerator, CPUAccelerator),
    "trainer.precision=bf16-mixed": lambda module, trainer: trainer.precision == "bf16-mixed",
    "compile=true": lambda module, trainer: module.net is not module.model.__call__,
}


@pytest.mark.parametrize("override", [
    pytest.param(option, marks=pytest.mark.slow) if option == "compile=true" else option
    for option in OPTIONS])  # compiling takes seconds
def test_other_options_train(make_cfg, override):
    """3 steps with a finite loss, a validation, and the option in effect."""
    _, module, trainer = fit(make_cfg(override))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert trainer.global_step == 3 and math.isfinite(metrics["train/loss"])
    assert 0 <= metrics["val/acc"] <= 1
    assert OPTIONS[override](module, trainer), override


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
    out = tmp_path / "run"
    assert accuracy == json.loads((out / "result.json").read_text())["metrics"]["test/acc"]
    assert (out / "checkpoints" / "last.ckpt").exists()
    assert len(list((out / "checkpoints").glob("best-*.ckpt"))) == 1
    assert list(out.glob("events.out.tfevents.*"))


def test_help_lists_groups_and_options():
    out = run_script("train.py", "--help").stdout
    for group, option in [("init", "xavier_normal"), ("optim", "rmsprop"), ("model", "mlp"),
                          ("scheduler", "onecycle"), ("trainer", "gpu"), ("logger", "none"),
                          ("data", "mnist"), ("callbacks", "none")]:
        assert f"{group}:" in out and option in out, (group, option)


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_train_script_end_to_end(tiny_data, tmp_path):
    out = tmp_path / "script_run"
    # the defaults (monitors, progress bar, corrupted test sets) but for the data and the size
    proc = run_script("train.py", f"hydra.run.dir={out}", f"data.data_dir={tiny_data}",
                      "data.verify=false", "data.sources=[local]", "trainer.max_steps=10",
                      "trainer.accelerator=cpu", "model.channels=[4,8]", "model.hidden=16",
                      "init=xavier", "optim=adam")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test accuracy: " in proc.stdout
    assert f"tensorboard --logdir {out}" in proc.stdout
    assert (out / ".hydra" / "config.yaml").exists()
    assert (out / "checkpoints" / "last.ckpt").exists()
    assert list(out.glob("events.out.tfevents.*"))
    # the process's first run: its clock starts at the process start, imports included
    t = json.loads((out / "result.json").read_text())["timings_s"]
    assert 0 < t["startup"] < t["first_step"] < t["total"]


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_train_script_bad_value_exits_nonzero_with_message(tiny_data, tmp_path):
    proc = run_script("train.py", f"hydra.run.dir={tmp_path}", f"data.data_dir={tiny_data}",
                      "data.sources=[local]", "optim.lr=-1")
    assert proc.returncode != 0
    assert "optim.lr=-1 is invalid" in proc.stderr


def _short_script_run(tiny_data, out, *overrides):
    """The tiny run through scripts/train.py: 6 batches of 16 an epoch, the progress bar on."""
    return run_script("train.py", f"hydra.run.dir={out}", *tiny_overrides((), tiny_data),
                      "data.batch_size=16", "trainer.enable_progress_bar=true", "robustness=null",
                      *overrides)


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_progress_in_a_log_file_is_plain_lines(tiny_data, tmp_path):
    """stdout not a terminal: a line per refresh, no carriage-return redraws."""
    proc = _short_script_run(tiny_data, tmp_path / "run", "trainer.max_epochs=2",
                             "progress_bar.refresh_rate=2", "trainer.log_every_n_steps=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "\r" not in proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    # 6 batches an epoch, a line every 2: 3 per epoch, with the training loss
    assert [line.split("  ")[:2] for line in lines] == [
        [f"epoch {e}", f"batch {b}/6"] for e in (0, 1) for b in (2, 4, 6)]
    assert all("train/ce" in line for line in lines)
    assert proc.stdout.count("validation at step ") == 2


@pytest.mark.slow  # a fresh interpreter: seconds of imports
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


@pytest.mark.slow  # a fresh interpreter: seconds of imports
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
