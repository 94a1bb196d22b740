"""Runs that fail as science: diverged and stalled runs are recorded, the sweep goes on."""

from __future__ import annotations

import json
import math
import re
import time

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from initlab.status import RunStatus
from initlab.train import run
from tests.helpers import matrix, run_script, tiny_overrides


def test_diverged_run_stops_early_and_says_where(make_cfg, tmp_path):
    score = run(make_cfg("optim=sgd", "optim.lr=1e12", "scheduler=none", "trainer.max_epochs=5",
                         "status.check_every_n_steps=1"))
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert math.isnan(score) and result["score"] is None
    assert result["status"] == "diverged"
    assert result["diverged_layer"] in {"conv1", "conv2", "fc1", "out"}
    assert 0 <= result["diverged_step"] <= result["steps"] < 15  # stopped long before 5 epochs


@pytest.mark.parametrize(("model", "every"), matrix(["cnn", "mlp"], [1, 3, 7],
                                                    fast={("cnn", 7), ("mlp", 3)}))
def test_divergence_at_any_monitor_cadence_ends_diverged(make_cfg, tmp_path, model, every):
    """Probe, histograms, Jacobians, update ratio and the status check at cadences that do and
    do not land on the divergence step: the run still ends diverged with a result.json."""
    # ReLU: unbounded activations (a tanh MLP saturates and stays finite at any step size)
    cfg = make_cfg(f"model={model}", "model.activation=relu", "optim=sgd", "optim.lr=1e12",
                   "scheduler=none",
                   "trainer.max_epochs=4", "callbacks=glorot", "robustness=null",
                   f"status.check_every_n_steps={every}", f"callbacks.probe.every_n_steps={every}",
                   f"callbacks.probe.histogram_every_n_steps={every}",
                   f"callbacks.probe.jacobian_every_n_steps={every}",
                   f"callbacks.update_ratio.every_n_steps={every}", outputs=True)
    assert math.isnan(run(cfg))
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "diverged", result
    assert result["diverged_layer"] is not None and result["diverged_step"] <= result["steps"]
    # the first non-finite step is exact whatever the cadence: a run checked every step agrees
    reference = make_cfg(f"model={model}", "model.activation=relu", "optim=sgd", "optim.lr=1e12",
                         "scheduler=none", "trainer.max_epochs=4", "robustness=null",
                         "status.check_every_n_steps=1", f"output_dir={tmp_path / 'reference'}")
    run(reference)
    expected = json.loads((tmp_path / "reference" / "result.json").read_text())
    assert result["diverged_step"] == expected["diverged_step"]


# fast: each fold, bad step and cadence once, folds that do and do not divide the cadence
@pytest.mark.parametrize(("fold", "bad_step", "every"), matrix(
    [2, 3, 256], [5, 13], [1, 4, 50], fast={(2, 13, 4), (3, 5, 50), (256, 13, 1)}))
def test_first_non_finite_step_is_exact_across_loss_folds(make_cfg, monkeypatch, fold, bad_step,
                                                          every):
    """RunStatus keeps each step's loss and folds them on the device every FOLD steps: a NaN
    written into the weights before step ``bad_step`` is reported as diverged at that step, at
    check cadences and fold sizes that do and do not line up with it."""
    import lightning as L
    import torch

    from initlab.status import RunStatus
    from initlab.train import build

    class Poison(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == bad_step:
                with torch.no_grad():
                    pl_module.model.out.weight.fill_(float("nan"))

    monkeypatch.setattr(RunStatus, "FOLD", fold)
    cfg = make_cfg("trainer.max_epochs=20", "robustness=null", "data.batch_size=8",
                   "optim=sgd", "scheduler=none", f"status.check_every_n_steps={every}")
    datamodule, module, trainer = build(cfg, extra_callbacks=[Poison()])
    trainer.fit(module, datamodule=datamodule)
    status = next(c for c in trainer.callbacks if isinstance(c, RunStatus))
    assert status.status == "diverged" and status.diverged_step == bad_step
    # stopped at the first check at or after the bad step (or the end of the epoch's steps)
    assert bad_step < trainer.global_step <= bad_step + every


def test_stalled_run_is_marked(make_cfg, tmp_path):
    score = run(make_cfg("init=zeros", "optim=sgd", "optim.lr=0.01", "status.stall_accuracy=0.5"))
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "stalled" and result["best_val_acc"] < 0.5
    assert score == result["score"] and 0 <= score <= 1


def test_healthy_run_result(make_cfg, tmp_path):
    run(make_cfg("trainer.max_epochs=2", "status.stall_accuracy=0.0", outputs=True))
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "ok" and result["steps"] == 6 and result["epochs"] == 2
    assert "test/acc" in result["metrics"]
    assert result["score"] == result["metrics"]["test/acc"]
    # where the time went: the phases of run() fit inside its wall time (total from the clock's
    # origin less the startup before run()), the parts inside fit
    t = result["timings_s"]
    assert set(t) == {"startup", "build", "fit", "validation", "test", "robustness", "logging",
                      "data_load", "checkpoint_writes", "first_step", "total"}
    assert all(v >= 0 for v in t.values())  # startup: 0 for a later run of this process
    assert 0 < t["build"] + t["fit"] + t["test"] + t["logging"] <= t["total"] - t["startup"] + 0.01
    assert 0 < t["data_load"] <= t["fit"] and 0 < t["checkpoint_writes"] <= t["fit"]
    # validation is inside fit, the corrupted test sets inside test (8 of the 9 test loaders)
    assert 0 < t["validation"] < t["fit"] and 0 < t["robustness"] < t["test"]
    # the first step starts after startup and build, inside fit, before the end (each rounded)
    begin_fit = t["startup"] + t["build"]
    assert begin_fit - 0.002 <= t["first_step"] <= begin_fit + t["fit"] + 0.002
    assert t["first_step"] < t["total"]


@pytest.mark.parametrize("levels", [[0.1], [0.1, 0.2, 0.3]])
def test_robustness_time_holds_every_corrupted_set(make_cfg, tmp_path, monkeypatch, levels):
    """Each corrupted set is corrupted as its first batch is fetched: the first set's
    corrupting counts in timings_s.robustness like the others', whatever the number of sets."""
    from initlab.data.splits import CorruptedBatches

    pause = 0.5  # beyond what corrupting the tiny test set costs
    corrupt_pass = CorruptedBatches.__iter__

    def slow_pass(self):
        time.sleep(pause)
        yield from corrupt_pass(self)

    monkeypatch.setattr(CorruptedBatches, "__iter__", slow_pass)
    run(make_cfg(f"robustness.noise={levels}", "robustness.skew=[]",
                 f"output_dir={tmp_path / 'run'}"))
    t = json.loads((tmp_path / "run" / "result.json").read_text())["timings_s"]
    assert len(levels) * pause <= t["robustness"] < (len(levels) + 0.5) * pause
    assert t["robustness"] < t["test"]


@pytest.mark.parametrize("extra", [[], ["+callbacks.clock._target_=initlab.monitors.TrainClock"]])
def test_validation_is_timed_once(make_cfg, extra):
    """One ValidationClock a fit: the TrainClock monitor when the callbacks hold one (its
    time/train_s and result.json's validation time subtract the same seconds), else build's."""
    from initlab.monitors import TrainClock
    from initlab.timing import ValidationClock
    from initlab.train import build

    datamodule, module, trainer = build(make_cfg(*extra))
    clocks = [c for c in trainer.callbacks if isinstance(c, ValidationClock)]
    assert len(clocks) == 1 and isinstance(clocks[0], TrainClock) == bool(extra)
    trainer.fit(module, datamodule=datamodule)
    assert clocks[0].timings_s["validation"] == clocks[0].validation_s > 0


def test_a_later_run_in_the_process_times_from_its_own_start(make_cfg, tmp_path):
    """A multirun's next job in the same process (Hydra's basic launcher, a reused joblib
    worker): its clock starts at run(), not at the process start the jobs before it share."""
    run(make_cfg("test=false", f"output_dir={tmp_path / 'first'}"))
    begin = time.perf_counter()
    run(make_cfg("test=false", f"output_dir={tmp_path / 'second'}"))
    seconds = time.perf_counter() - begin
    t = json.loads((tmp_path / "second" / "result.json").read_text())["timings_s"]
    assert t["startup"] == 0
    rounding = 0.0015  # result.json rounds each value to the ms: three of them add up to 1.5 ms
    assert t["build"] + t["fit"] + t["logging"] <= t["total"] + rounding
    assert t["total"] <= seconds
    assert t["build"] <= t["first_step"] <= t["total"]


@pytest.mark.parametrize("every", [1, 2])
def test_timings_of_the_optional_parts(make_cfg, tmp_path, every):
    """The probe monitor's time (step 0 and every ``every`` steps) is in timings_s, inside fit;
    no corrupted test sets or validation: no such keys."""
    run(make_cfg("trainer.max_epochs=1", "callbacks=default", "robustness=null",
                 "trainer.limit_val_batches=0", f"callbacks.probe.every_n_steps={every}",
                 "callbacks.probe.jacobian_samples=0"))
    t = json.loads((tmp_path / "run" / "result.json").read_text())["timings_s"]
    assert "robustness" not in t and "validation" not in t
    assert 0 < t["probe"] < t["fit"]


@pytest.mark.parametrize("every", [1, 2, 1000])
def test_probe_time_counts_every_probe(make_cfg, every):
    """ProbeMonitor's timings_s["probe"] is the time of every measurement it made (step 0, the
    cadence's, the end's), recomputed here by timing each call from outside."""
    import time

    from initlab.monitors import ProbeMonitor
    from initlab.train import build

    cfg = make_cfg("callbacks=default", "robustness=null", "test=false",
                   f"callbacks.probe.every_n_steps={every}", "callbacks.probe.jacobian_samples=0")
    datamodule, module, trainer = build(cfg)
    monitor = next(c for c in trainer.callbacks if isinstance(c, ProbeMonitor))
    original, steps, outside = monitor._probe_and_log, [], []

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            outside.append(time.perf_counter() - start)
            steps.append(args[2])

    monitor._probe_and_log = timed
    trainer.fit(module, datamodule=datamodule)
    assert steps == {1: [0, 1, 2, 3], 2: [0, 2, 3], 1000: [0, 3]}[every]
    assert sum(outside) <= monitor.timings_s["probe"] <= sum(outside) + 0.005 * len(steps)


def run_sweep(tiny_data, sweep, *overrides):
    """A multirun of the tiny run through scripts/train.py into the folder ``sweep``."""
    return run_script("train.py", "-m", f"hydra.sweep.dir={sweep}",
                      *tiny_overrides(overrides, tiny_data), "robustness=null", *overrides,
                      timeout=900)


def jobs(sweep):
    for job in sorted((p for p in sweep.iterdir() if p.is_dir()), key=lambda p: int(p.name)):
        yield OmegaConf.load(job / ".hydra" / "config.yaml"), json.loads(
            (job / "result.json").read_text())


@pytest.mark.slow
def test_multirun_of_diverged_stalled_and_healthy_jobs_exits_zero_and_is_reported(tiny_data,
                                                                                 tmp_path):
    """With the default and the glorot monitors (histograms and Jacobians on), a diverging job
    ends diverged, the sweep runs every job and exits 0, and the report marks each status."""
    sweep = tmp_path / "sweep"
    proc = run_sweep(tiny_data, sweep, "init=zeros,xavier", "optim=sgd", "optim.lr=1e12,0.05",
                     "scheduler=none", "callbacks=default,glorot", "trainer.max_epochs=3",
                     "status.check_every_n_steps=2", "status.stall_accuracy=0.5",
                     "callbacks.probe.every_n_steps=1", "callbacks.probe.histogram_every_n_steps=1",
                     "callbacks.probe.jacobian_every_n_steps=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    statuses = {}
    for cfg, result in jobs(sweep):
        key = (cfg.init.scheme, cfg.optim.lr > 1, "glorot" if cfg.callbacks.probe.every_n_steps
               == 1 and cfg.callbacks.update_ratio.every_n_steps == 50 else "default")
        statuses[key] = result["status"]
    assert len(statuses) == 8
    for monitors in ("default", "glorot"):
        assert statuses[("xavier", True, monitors)] == "diverged"
        assert statuses[("xavier", False, monitors)] == "ok"
        # zeros: every unit stays identical; a huge step only inflates the output bias (finite)
        assert statuses[("zeros", False, monitors)] == "stalled"
    report = run_script("report.py", str(sweep))
    assert report.returncode == 0, report.stderr[-3000:]
    text = (sweep / "report.md").read_text()
    for mark in ("**(1 diverged, left out)**", "**(includes 1 stalled)**", "| ok: val ",
                 "diverged at step ", "stalled: val "):
        assert mark in text


@pytest.mark.slow  # a sweep through scripts/train.py
def test_a_crashed_job_is_recorded_failed_and_the_sweep_goes_on(tiny_data, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_sweep(tiny_data, sweep, "logger=none", "checkpoint=null", "trainer.max_epochs=2",
                     "+callbacks.crash._target_=tests.helpers.CrashAtStep",
                     "+callbacks.crash.step=2,null")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (crashed_cfg, crashed), (_, healthy) = jobs(sweep)
    assert crashed_cfg.callbacks.crash.step == 2
    assert crashed["status"] == "failed" and crashed["score"] is None
    assert crashed["error"] == "RuntimeError: simulated crash at step 2" and crashed["steps"] == 2
    assert healthy["status"] in ("ok", "stalled") and healthy["steps"] == 6
    # the traceback is in the job's log
    assert "RuntimeError: simulated crash at step 2" in (sweep / "0" / "train.log").read_text()


def test_a_crash_in_a_single_run_raises_after_writing_result(make_cfg, tmp_path):
    cfg = make_cfg("+callbacks.crash._target_=tests.helpers.CrashAtStep",
                   "+callbacks.crash.step=1")
    with pytest.raises(RuntimeError, match="simulated crash at step 1"):
        run(cfg)
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "failed" and "simulated crash" in result["error"]
    assert math.isnan(run(cfg, keep_going=True))  # a sweep's job returns NaN and goes on


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_config_errors_still_fail_a_sweep(tiny_data, tmp_path):
    proc = run_sweep(tiny_data, tmp_path, "optim.lr=0.01,-1", "trainer.max_steps=1")
    assert proc.returncode != 0 and "optim.lr=-1 is invalid" in proc.stderr


@pytest.mark.parametrize("bad", ["robustness.blur=[1]", "robustness.noise=[-1]"])
def test_bad_robustness_values_are_named(make_cfg, bad):
    from initlab.train import build

    with pytest.raises(ValueError, match="robustness.blur is unknown|augment.noise_std=-1"):
        build(make_cfg(bad.replace("robustness.blur", "+robustness.blur")))


class ScaleOutput(L.Callback):
    """Multiplies the output layer's weights by ``factor`` before step ``step``: from that step
    on the loss is huge but finite (a blow-up that NaN checks miss)."""

    def __init__(self, step: int, factor: float = 1e6):
        self.step, self.factor = step, factor

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.model.out.weight.mul_(self.factor)


class PoisonOutput(ScaleOutput):
    """NaN in the output layer's weights before step ``step``: the loss is not finite."""

    def __init__(self, step: int):
        super().__init__(step, float("nan"))


def fit_result(make_cfg, tmp_path, *overrides, callbacks=(), outputs=False):
    """Fit (and test, unless diverged) as run() does, with ``callbacks`` first; the verdict
    and the trainer."""
    from initlab.train import build

    cfg = make_cfg("robustness=null", "optim=sgd", "optim.lr=0.05", "scheduler=none",
                   *overrides, outputs=outputs)
    datamodule, module, trainer = build(cfg, extra_callbacks=list(callbacks))
    trainer.fit(module, datamodule=datamodule)
    status = next(c for c in trainer.callbacks if isinstance(c, RunStatus))
    if cfg.test and status.status != "diverged":
        trainer.test(module, datamodule=datamodule, verbose=False)
    return status, trainer


@pytest.mark.parametrize(("every", "bad_step"), matrix([1, 4], [2, 5], fast={(1, 2), (4, 5)}))
def test_a_finite_blowup_is_diverged_at_its_first_step(make_cfg, tmp_path, every, bad_step):
    status, trainer = fit_result(make_cfg, tmp_path, "trainer.max_epochs=6",
                                 f"status.check_every_n_steps={every}",
                                 callbacks=[ScaleOutput(bad_step)])
    summary = status.summary()
    assert summary["status"] == "diverged" and summary["diverged_step"] == bad_step
    loss = summary["diverged_loss"]
    assert math.isfinite(loss) and loss > 100 * summary["first_loss"]
    assert f"at step {bad_step}" in summary["status_reason"]
    assert "blowup_factor 100" in summary["status_reason"]
    assert bad_step < trainer.global_step <= bad_step + every  # stopped at the next check


class RecordLosses(L.Callback):
    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


@pytest.mark.parametrize("every", [pytest.param(1, marks=pytest.mark.slow), 3])
def test_blowup_bound_is_configurable_and_can_be_turned_off(make_cfg, tmp_path, every):
    """With the bound off a blown-up (finite) run trains to the end; with a bound, it is
    diverged at the first step whose loss, recorded by the off run, passed bound x step 0's."""
    common = ["trainer.max_epochs=3", f"status.check_every_n_steps={every}"]
    record = RecordLosses()
    off, trainer = fit_result(make_cfg, tmp_path, *common, "status.blowup_factor=null",
                              callbacks=[ScaleOutput(2, 1e3), record])
    assert off.status != "diverged" and trainer.global_step == 9
    losses = record.losses
    factor = (max(losses) / losses[0]) ** 0.5  # a bound the recorded losses pass
    assert factor > 1
    expected = next(step for step, loss in enumerate(losses) if loss > factor * losses[0])
    on, _ = fit_result(make_cfg, tmp_path, *common, f"status.blowup_factor={factor}",
                       callbacks=[ScaleOutput(2, 1e3)])
    assert on.status == "diverged" and on.diverged_step == expected
    assert on.diverged_loss == pytest.approx(losses[expected], rel=1e-5)
    assert on.first_loss == pytest.approx(losses[0], rel=1e-6)


@pytest.mark.parametrize("every", [pytest.param(1, marks=pytest.mark.slow), 4])
def test_a_non_finite_loss_is_diverged_and_says_so(make_cfg, tmp_path, every):
    status, _ = fit_result(make_cfg, tmp_path, "trainer.max_epochs=6",
                           f"status.check_every_n_steps={every}", callbacks=[PoisonOutput(3)])
    summary = status.summary()
    assert summary["status"] == "diverged" and summary["diverged_step"] == 3
    assert summary["diverged_loss"] == "nan" and "not finite" in summary["status_reason"]
    json.dumps(summary, allow_nan=False)  # result.json holds it


@pytest.mark.parametrize(("every", "epochs"), [pytest.param(1, 2, marks=pytest.mark.slow), (4, 3)])
@pytest.mark.parametrize("basis", ["val", "test", "train"])  # each its own code path
def test_zero_init_stalls_whether_or_not_validation_ran(make_cfg, tmp_path, every, epochs, basis):
    """Zero init keeps every unit identical: the run ends near chance. It is stalled from the
    last validation accuracy; without validation from the test accuracy; without either from
    the training accuracy; result.json says which."""
    off = {"val": [], "test": ["trainer.limit_val_batches=0"],
           "train": ["trainer.limit_val_batches=0", "test=false"]}[basis]
    cfg = make_cfg("init=zeros", "optim=sgd", "optim.lr=0.01", "robustness=null",
                   "status.stall_accuracy=0.5", f"status.check_every_n_steps={every}",
                   f"trainer.max_epochs={epochs}", *off)
    run(cfg)
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "stalled" and result["accuracy_basis"] == basis
    measured = {"val": result["metrics"].get("val/acc"), "test": result["metrics"].get("test/acc"),
                "train": result["metrics"].get("train/acc_epoch")}[basis]
    assert result["final_accuracy"] == pytest.approx(measured) and measured < 0.5
    assert result["status_reason"].startswith(
        {"val": "val accuracy", "test": "test accuracy", "train": "training accuracy"}[basis])
    assert f"{measured:.3f} < stall_accuracy 0.5" in result["status_reason"]
    assert ("no validation" in result["status_reason"]) == (basis != "val")
    assert ("val/acc" in result["metrics"]) == (basis == "val")


@pytest.mark.parametrize(("every", "epochs"), [(1, 1), pytest.param(4, 2, marks=pytest.mark.slow)])
def test_a_run_that_learns_is_ok_with_its_reason(make_cfg, tmp_path, every, epochs):
    run(make_cfg("data.train_samples=null", "robustness=null", "status.stall_accuracy=0.5",
                 f"status.check_every_n_steps={every}", f"trainer.max_epochs={epochs}"))
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["accuracy_basis"] == "val"
    assert result["final_accuracy"] == pytest.approx(result["metrics"]["val/acc"])
    # the tiny digits are learnable: the verdict is ok, from the measured accuracy
    assert result["metrics"]["val/acc"] >= 0.5 and result["status"] == "ok"
    assert result["status_reason"] == (f"val accuracy {result['metrics']['val/acc']:.3f} >= "
                                       "stall_accuracy 0.5")


class RecordValidations(L.Callback):
    def __init__(self):
        self.seen: list[tuple[int, float]] = []  # (step, val/acc)

    def on_validation_end(self, trainer, pl_module):
        self.seen.append((trainer.global_step, float(trainer.callback_metrics["val/acc"])))


@pytest.mark.parametrize("max_steps", [2, 5])
def test_a_fit_stopped_by_max_steps_mid_epoch_ends_validated(make_cfg, tmp_path, max_steps):
    """Three batches an epoch: max_steps 2 and 5 stop inside an epoch; Lightning's own
    validation loop runs at that step (and at epoch ends before it), so the verdict, the
    metrics and the best checkpoint see the final weights' val/acc."""
    record = RecordValidations()
    status, trainer = fit_result(make_cfg, tmp_path, f"trainer.max_steps={max_steps}",
                                 "trainer.max_epochs=-1", "logger=none", "test=false",
                                 "status.stall_accuracy=0.0", callbacks=[record], outputs=True)
    assert trainer.global_step == max_steps
    assert [step for step, _ in record.seen] == [s for s in (3, max_steps) if s <= max_steps]
    assert status.accuracy_basis == "val" and status.final_accuracy == record.seen[-1][1]
    assert float(trainer.callback_metrics["val/acc"]) == record.seen[-1][1]
    best_step = max(record.seen, key=lambda seen: seen[1])[0]  # the first of equal bests
    best = [p.name for p in (tmp_path / "run" / "checkpoints").glob("best-*.ckpt")]
    assert best == [f"best-{(best_step - 1) // 3}-{best_step}.ckpt"]


@pytest.mark.parametrize(("override", "named"), [
    ("status.blowup_factor=1", "status.blowup_factor=1 is invalid"),
    ("status.blowup_factor=big", "status.blowup_factor='big' is invalid"),
    ("status.stall_accuracy=1.5", "status.stall_accuracy=1.5 is invalid"),
    ("status.check_every_n_steps=0", "status.check_every_n_steps=0 is invalid"),
    ("+status.stall=0.2", "status has unknown keys ['stall']; allowed:"),
])
def test_bad_status_values_are_named_before_training(make_cfg, override, named):
    from initlab.train import ConfigError, build

    with pytest.raises(ConfigError, match=re.escape(named)):
        build(make_cfg(override))
