"""run(cfg): the one place that turns a composed config into objects and trains."""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from initlab.checkpointing import (
    AtomicCheckpointIO,
    SaveOnInterrupt,
    check_checkpoint,
    check_output_dir,
    check_same_run,
    own_checkpoint,
)
from initlab.console import say
from initlab.data.robustness import check_corruptions
from initlab.init import apply_init
from initlab.module import Classifier, build_scheduler
from initlab.pilots import check_pilots, run_pilots
from initlab.status import Heartbeat, RunStatus, ValidateAtMaxSteps
from initlab.utils import atomic_write, process_age_s, retain_freed_memory

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration value is invalid; raised before any training starts."""


def instantiate_optional(node: Any) -> Any:
    """``None`` for a disabled component (null, or ``_target_: null``), else the object."""
    if node is None or (isinstance(node, DictConfig) and node.get("_target_", "") is None):
        return None
    return instantiate(node)


def check_config(cfg: DictConfig) -> None:
    """Check the values that would otherwise fail late or obscurely."""
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed={seed!r} is invalid: it must be an integer >= 0")
    lr = cfg.optim.get("lr")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
        raise ConfigError(f"optim.lr={lr!r} is invalid: it must be a number > 0")
    if not isinstance(cfg.get("auto_resume", True), bool):
        raise ConfigError(f"auto_resume={cfg.get('auto_resume')!r} is invalid: it must be true or false")
    for key in ("l1", "l2"):
        value = cfg.get(key)
        if not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{key}={value!r} is invalid: it must be a number >= 0")
    channels_last = cfg.get("channels_last")
    if channels_last not in MEMORY_FORMAT_SETTINGS:
        raise ConfigError(f"channels_last={channels_last!r} is invalid; allowed: "
                          f"{list(MEMORY_FORMAT_SETTINGS)}")
    check_corruptions(cfg.get("robustness"))
    check_tune(cfg.get("tune"))
    check_status(cfg.get("status"))
    try:
        check_pilots(cfg.get("pilots"))
    except ValueError as err:
        raise ConfigError(str(err)) from None


STATUS_KEYS = ("check_every_n_steps", "stall_accuracy", "blowup_factor")


def check_status(status: DictConfig | None) -> None:
    """The ``status`` group: every key known and every value usable by RunStatus."""
    status = status or {}
    unknown = sorted(set(status) - set(STATUS_KEYS))
    if unknown:
        raise ConfigError(f"status has unknown keys {unknown}; allowed: {list(STATUS_KEYS)}")
    every = status.get("check_every_n_steps", 50)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ConfigError(f"status.check_every_n_steps={every!r} is invalid: it must be an "
                          "integer >= 1")
    stall = status.get("stall_accuracy", 0.2)
    if not _is_number(stall) or not 0 <= stall <= 1:
        raise ConfigError(f"status.stall_accuracy={stall!r} is invalid: it must be a number "
                          "from 0 to 1")
    factor = status.get("blowup_factor", 100.0)
    if factor is not None and (not _is_number(factor) or not factor > 1):
        raise ConfigError(f"status.blowup_factor={factor!r} is invalid: it must be a number > 1 "
                          "or null (only a non-finite loss counts as diverged)")


MEMORY_FORMAT_SETTINGS = ("auto", True, False)


def channels_last_in_effect(setting: str | bool, model: torch.nn.Module,
                            device: torch.device) -> bool:
    """``channels_last=auto``: the memory format that measured fastest for a model with
    convolutions on the device (README, Speed): channels-last on the CPU (0.70-0.74x the time
    of channels-first, paired raw loops of the default CNN, 2-core CPU), channels-first on CUDA
    (fp32 channels-last 1.10x the time of the speedrun on an H200). A model without
    convolutions keeps its format."""
    if setting != "auto":
        return bool(setting)
    has_conv = any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())
    return has_conv and device.type == "cpu"


TUNE_KEYS = ("min_lr", "max_lr", "num_training", "mode", "early_stop_threshold", "apply")
LR_FIND_MODES = ("exponential", "linear")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_tune(tune: DictConfig | None) -> None:
    """The ``tune`` group (``+tune=lr_find``): every key known and every value usable."""
    if tune is None:
        return
    unknown = sorted(set(tune) - set(TUNE_KEYS))
    if unknown:
        raise ConfigError(f"tune has unknown keys {unknown}; allowed: {list(TUNE_KEYS)}")
    min_lr, max_lr = tune.get("min_lr", 1e-6), tune.get("max_lr", 1.0)
    if not _is_number(min_lr) or not min_lr > 0:
        raise ConfigError(f"tune.min_lr={min_lr!r} is invalid: it must be a number > 0")
    if not _is_number(max_lr) or not max_lr > min_lr:
        raise ConfigError(f"tune.max_lr={max_lr!r} is invalid: it must be a number > "
                          f"tune.min_lr={min_lr!r}")
    num_training = tune.get("num_training", 100)
    if isinstance(num_training, bool) or not isinstance(num_training, int) or num_training < 1:
        raise ConfigError(f"tune.num_training={num_training!r} is invalid: it must be an "
                          "integer >= 1 (a suggestion needs at least 13 steps)")
    mode = tune.get("mode", "exponential")
    if mode not in LR_FIND_MODES:
        raise ConfigError(f"tune.mode={mode!r} is unknown; allowed: {list(LR_FIND_MODES)}")
    threshold = tune.get("early_stop_threshold", 4.0)
    if threshold is not None and (not _is_number(threshold) or not threshold > 1):
        raise ConfigError(f"tune.early_stop_threshold={threshold!r} is invalid: it must be a "
                          "number > 1 or null (never stop early)")
    if not isinstance(tune.get("apply", False), bool):
        raise ConfigError(f"tune.apply={tune.get('apply')!r} is invalid: it must be true or false")


def data_shape_kwargs(model_cfg: DictConfig, datamodule) -> dict:
    """The model's input shape and class count, from the data module (the model class's
    ``data_kwargs``); a model config that sets one of them otherwise is an error."""
    from hydra.utils import get_class

    cls = get_class(model_cfg._target_)
    if not hasattr(cls, "data_kwargs") or not hasattr(datamodule, "input_shape"):
        return {}  # a model or data module from outside initlab: the config says it all
    try:
        kwargs = cls.data_kwargs(tuple(datamodule.input_shape), datamodule.num_classes)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    for key, value in kwargs.items():
        if key in model_cfg and model_cfg[key] != value:
            raise ConfigError(f"model.{key}={model_cfg[key]!r} disagrees with the data "
                              f"({type(datamodule).__name__} gives {value}): leave it unset")
    return kwargs


def _metrics_to_floats(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def build(cfg: DictConfig, datamodule: L.LightningDataModule | None = None,
          extra_callbacks: list[L.Callback] | tuple = ()):
    """Instantiate data (unless given one already set up), model (initialised),
    LightningModule, callbacks (``extra_callbacks`` first), logger and trainer."""
    check_config(cfg)
    output_dir = Path(cfg.output_dir)
    # before find_lr may change optim.lr: the config as launched, saved with every checkpoint
    launched = OmegaConf.to_container(cfg, resolve=True)
    try:
        check_output_dir(output_dir)
        own = own_checkpoint(output_dir) if cfg.checkpoint and cfg.get("auto_resume", True) else None
        if own is not None:  # a requeued or relaunched job: its folder's checkpoint comes first
            check_same_run(check_checkpoint(own), own, launched)
            log.info("continuing this folder's run from %s", own)
            cfg.ckpt_path = str(own)
        elif cfg.ckpt_path:
            check_checkpoint(cfg.ckpt_path)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = datamodule if datamodule is not None else instantiate(cfg.data)
    model = instantiate(cfg.model, **data_shape_kwargs(cfg.model, datamodule))
    apply_init(model, **cfg.init, activation=cfg.model.activation)
    optimizer = instantiate(cfg.optim)
    scheduler = instantiate_optional(cfg.scheduler)
    try:  # fail now, not at the first step, on values torch rejects (momentum < 0, ...)
        probe_optimizer = optimizer(model.parameters())
    except ValueError as err:
        raise ConfigError(f"optim: {err} (got {OmegaConf.to_container(cfg.optim)})") from err
    if scheduler is not None:
        try:
            build_scheduler(scheduler, probe_optimizer, total_steps=1000)
        except ValueError as err:
            raise ConfigError(f"scheduler: {err}") from err
    module = Classifier(model, optimizer, scheduler, cfg.l1, cfg.l2, compile=cfg.compile,
                        seed=cfg.seed, num_classes=getattr(datamodule, "num_classes", 10))

    callbacks = [*extra_callbacks, RunStatus(**cfg.status), ValidateAtMaxSteps(),
                 Heartbeat(output_dir)]
    for name, node in cfg.callbacks.items():
        if node is not None and "_target_" not in node:
            raise ConfigError(f"callbacks.{name} has no _target_: it sets options of a monitor that "
                              f"the chosen callbacks group does not include ({OmegaConf.to_container(node)})")
        if node is not None:
            callbacks.append(instantiate(node))
    logger = instantiate_optional(cfg.logger)
    if logger is not None:
        callbacks.append(L.pytorch.callbacks.LearningRateMonitor(logging_interval="step"))
    if cfg.checkpoint:
        callbacks += [instantiate(node) for node in cfg.checkpoint.values() if node is not None]
        callbacks.append(SaveOnInterrupt(Path(output_dir) / "checkpoints", config=launched))
    if cfg.trainer.get("enable_progress_bar", True) and cfg.progress_bar is not None:
        callbacks.append(instantiate(cfg.progress_bar))
    plugins = [AtomicCheckpointIO()]
    slurm = SLURMEnvironment(auto_requeue=False) if SLURMEnvironment.detect() else None
    if slurm is not None:
        # SaveOnInterrupt handles SLURM's warning signal after a whole batch; Lightning's
        # auto-requeue would save from inside the signal handler, mid-step
        plugins.append(slurm)
    trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=logger if logger is not None else False,
        enable_checkpointing=bool(cfg.checkpoint),
        default_root_dir=str(output_dir),
        plugins=plugins,
    )
    if slurm is not None:
        try:  # Lightning checks this only when fit launches; a job that cannot train fails now
            slurm.validate_settings(num_devices=trainer.num_devices, num_nodes=trainer.num_nodes)
        except ValueError as err:
            raise ConfigError("SLURM gave this job other resources than the trainer asks for: "
                              f"{err}") from err
    # the trainer knows the device; conv outputs follow the weights' layout
    module.channels_last = channels_last_in_effect(cfg.channels_last, model,
                                                   trainer.strategy.root_device)
    if module.channels_last:
        model.to(memory_format=torch.channels_last)
    return datamodule, module, trainer


class RunClock(L.Callback):
    """Marks, on a :class:`Timings`, the start of the first training batch this process runs
    (the batch already fetched, the forward not yet run), and adds to it the validation passes
    (inside ``fit``) and the corrupted test sets (the test loaders after the clean one, inside
    ``test``). Host clock: on CUDA a phase ends when its last result is read back."""

    def __init__(self, clock: Timings):
        self.clock = clock
        self._validation_start: float | None = None
        self._robustness_start: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.clock.first_step is None:
            self.clock.first_step = self.clock.age()

    def on_validation_start(self, trainer, pl_module) -> None:
        self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._validation_start is not None:
            self.clock.add("validation", time.perf_counter() - self._validation_start)
            self._validation_start = None

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if dataloader_idx > 0 and self._robustness_start is None:
            self._robustness_start = time.perf_counter()

    def on_test_end(self, trainer, pl_module) -> None:
        if self._robustness_start is not None:
            self.clock.add("robustness", time.perf_counter() - self._robustness_start)
            self._robustness_start = None


class Timings:
    """Where a run's wall clock goes, for result.json's ``timings_s``: ``startup`` (process
    start to run(): imports, config), the phases of run() (``build``, ``tune`` with
    ``+tune=lr_find``, ``pilots`` with ``pilots`` set, ``fit``, ``test``, ``logging``); inside
    them ``data_load`` (reading and checking MNIST), ``checkpoint_writes``, ``validation``
    (inside fit), ``robustness`` (the corrupted test sets, inside test) and ``probe`` (the probe
    monitor's measurements, step 0 included, inside fit), each present when it happened;
    ``first_step``: process start to the start of the first training step this process runs
    (imports, config, build, data load, Lightning's setup; absent if it ran none); ``total``
    from process start. Callbacks that time themselves contribute their ``timings_s`` dict."""

    def __init__(self):
        self.start = time.perf_counter()
        self.startup = process_age_s()
        self.first_step: float | None = None
        self.phases: dict[str, float] = {}
        self._datamodule = self._checkpoint_io = None
        self._callbacks: list = []

    def callback(self) -> RunClock:
        return RunClock(self)

    def age(self) -> float:
        """Seconds since process start, on the same clock as ``total``."""
        return self.elapsed() + (self.startup or 0.0)

    def add(self, name: str, seconds: float) -> None:
        self.phases[name] = self.phases.get(name, 0.0) + seconds

    @contextlib.contextmanager
    def phase(self, name: str):
        begin = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - begin)

    def watch(self, trainer, datamodule) -> None:
        self._datamodule, self._checkpoint_io = datamodule, trainer.strategy.checkpoint_io
        self._callbacks = trainer.callbacks

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def summary(self) -> dict[str, float | None]:
        parts = {"startup": self.startup, **self.phases,
                 "first_step": self.first_step,
                 "data_load": getattr(self._datamodule, "load_seconds", None),
                 "checkpoint_writes": getattr(self._checkpoint_io, "seconds", None)}
        for callback in self._callbacks:
            parts.update(getattr(callback, "timings_s", {}))
        total = self.age()
        return {**{k: round(v, 3) for k, v in parts.items() if v is not None},
                "total": round(total, 3)}


def run(cfg: DictConfig, keep_going: bool = False) -> float:
    """Train and test one configuration; write ``result.json`` whatever happens; return the
    metric a sweep optimises (test accuracy, or validation accuracy when ``test=false``; NaN
    if diverged or failed).

    A configuration error raises before training. A crash during training writes
    ``status: failed`` with the error, then raises, or returns NaN with ``keep_going`` (a
    multirun: the other jobs go on).
    """
    clock = Timings()
    retain_freed_memory()  # each step reuses the memory the last one freed: no page faults
    trainer = status = None
    metrics: dict[str, float] = {}
    try:
        with clock.phase("build"):
            datamodule, module, trainer = build(cfg, extra_callbacks=[clock.callback()])
    except Exception as err:
        with contextlib.suppress(OSError):  # an unwritable output folder is the error itself
            _write_result(cfg, None, None, {}, clock, error=err)
        raise
    clock.watch(trainer, datamodule)
    status = next(c for c in trainer.callbacks if isinstance(c, RunStatus))
    try:
        if cfg.get("tune") is not None:
            with clock.phase("tune"):
                find_lr(cfg, module, datamodule)
        if cfg.get("pilots") is not None:
            with clock.phase("pilots"):
                run_pilots(cfg, module, datamodule)
        with clock.phase("fit"):
            metrics = _fit(cfg, trainer, module, datamodule, status, clock)
        if cfg.test and status.status != "diverged":
            with clock.phase("test"):
                metrics.update(_test(cfg, trainer, module, datamodule))
        with clock.phase("logging"):
            _log_hyperparams(cfg, trainer, metrics)
    except Exception as err:
        metrics.update(_metrics_to_floats(trainer.callback_metrics))
        _write_result(cfg, trainer, status, metrics, clock, error=err)
        if not keep_going:
            raise
        log.exception("run failed; the sweep goes on (result.json: status failed)")
        return math.nan
    key = "test/acc" if cfg.test else "val/acc"
    score = math.nan if status.status == "diverged" else metrics.get(key, math.nan)
    _write_result(cfg, trainer, status, metrics, clock, key, score)
    if trainer.is_global_zero:
        say(f"status: {status.status} ({status.reason})")
        say(f"test accuracy: {metrics.get('test/acc', math.nan):.4f}   "
            f"val accuracy: {metrics.get('val/acc', math.nan):.4f}   steps: {trainer.global_step}")
        say(f"inspect with: tensorboard --logdir {cfg.output_dir}")
    return score


def find_lr(cfg: DictConfig, module: Classifier, datamodule) -> float | None:
    """Lightning's learning-rate range test (``cfg.tune``) on a bare Trainer, a copy of the
    module (its model deep-copied) and a copy of the data module, with the random state
    restored after: the real run's weights, monitors, logs, data order and random draws are
    those of a run without it. Writes ``lr_find.json`` (rank 0); with ``tune.apply`` the
    module's optimizer (and ``cfg.optim.lr``, for the HParams) takes the suggestion. Returns
    the suggestion (None when Lightning could not make one)."""
    from lightning.pytorch.tuner import Tuner
    from lightning.pytorch.utilities.seed import isolate_rng

    tune = cfg.tune
    min_lr, max_lr = tune.get("min_lr", 1e-6), tune.get("max_lr", 1.0)
    num_training = tune.get("num_training", 100)
    datamodule.setup("fit")  # loaded once, here; the copy shares nothing with the real run
    with isolate_rng():
        copy_module = Classifier(copy.deepcopy(module.model), module.optimizer_factory,
                                 module.scheduler_factory, module.l1, module.l2,
                                 num_classes=module.val_acc.num_classes,
                                 compile=False, seed=module.seed)
        trainer_args = {k: cfg.trainer[k] for k in
                        ("accelerator", "devices", "precision", "strategy", "num_nodes",
                         "deterministic") if cfg.trainer.get(k) is not None}
        # max_steps: the search may need more steps than one epoch or the run's max_epochs
        tuner_trainer = L.Trainer(**trainer_args, max_epochs=None, max_steps=num_training,
                                  logger=False, callbacks=[], enable_checkpointing=False,
                                  enable_progress_bar=False, enable_model_summary=False,
                                  num_sanity_val_steps=0, default_root_dir=str(cfg.output_dir))
        finder = Tuner(tuner_trainer).lr_find(
            copy_module, datamodule=copy.deepcopy(datamodule), min_lr=min_lr, max_lr=max_lr,
            num_training=num_training, mode=tune.get("mode", "exponential"),
            early_stop_threshold=tune.get("early_stop_threshold", 4.0), update_attr=False)
    lrs = [float(v) for v in finder.results.get("lr", [])] if finder is not None else []
    losses = [float(v) for v in finder.results.get("loss", [])] if finder is not None else []
    suggestion = finder.suggestion() if finder is not None and lrs else None
    applied = bool(tune.get("apply", False)) and suggestion is not None
    if tune.get("apply", False) and suggestion is None:
        log.warning("tune.apply=true but lr_find made no suggestion: training with optim.lr=%s",
                    cfg.optim.lr)
    if applied:
        factory = module.optimizer_factory
        module.optimizer_factory = functools.partial(
            factory.func, *factory.args, **{**factory.keywords, "lr": float(suggestion)})
        cfg.optim.lr = float(suggestion)
    if tuner_trainer.is_global_zero:
        record = {"lr": lrs, "loss": [v if math.isfinite(v) else None for v in losses],
                  "suggestion": float(suggestion) if suggestion is not None else None,
                  "applied": applied, "min_lr": min_lr, "max_lr": max_lr,
                  "num_training": num_training}
        atomic_write(Path(cfg.output_dir) / "lr_find.json",
                     json.dumps(record, indent=2, allow_nan=False).encode())
    return suggestion


def _fit(cfg, trainer, module, datamodule, status: RunStatus, clock: Timings) -> dict[str, float]:
    """trainer.fit; an interrupted fit (Ctrl-C, SIGTERM) writes result.json and exits."""
    if isinstance(trainer.logger, TensorBoardLogger) and trainer.is_global_zero:
        # here, not at the top: only TensorBoard runs need the monitors' module (~10 ms)
        from initlab.monitors.callbacks import add_layout

        add_layout(trainer.logger, trainer.callbacks,
                   corruptions=bool(cfg.test and cfg.get("robustness")))
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    except SystemExit:  # Lightning ends an interrupted fit with SystemExit
        if status.status != "interrupted":
            raise
        _write_result(cfg, trainer, status, _metrics_to_floats(trainer.callback_metrics), clock)
        saver = next((c for c in trainer.callbacks if isinstance(c, SaveOnInterrupt)), None)
        code = saver.hand_on() if saver is not None else None  # submitit: requeues and exits
        raise SystemExit(code or status.exit_code) from None
    return _metrics_to_floats(trainer.callback_metrics)


def _test(cfg, trainer, module, datamodule) -> dict[str, float]:
    """Test-set metrics, and accuracy on the corrupted copies (``robustness``: the data module's
    extra test dataloaders), all inside trainer.test, where Lightning places model and data."""
    per_loader = trainer.test(module, datamodule=datamodule, verbose=False)
    return _metrics_to_floats({k: v for metrics in per_loader for k, v in metrics.items()})


def _log_hyperparams(cfg, trainer, metrics: dict[str, float]) -> None:
    """The HParams tab (initlab.loggers.log_hparams); then close the events file."""
    if trainer.logger is None:
        return
    from initlab.loggers import log_hparams

    log_hparams(trainer.logger, cfg, metrics, trainer.global_step)
    trainer.logger.finalize("success")
    if hasattr(trainer.logger, "close"):
        trainer.logger.close()


def _write_result(cfg, trainer, status: RunStatus | None, metrics: dict[str, float], clock: Timings,
                  key: str | None = None, score: float = math.nan,
                  error: BaseException | None = None) -> None:
    """``result.json`` next to the events (rank 0): status, metrics, steps, wall time and where
    it went; a run that raised is ``failed`` with the error."""
    if trainer is not None and not trainer.is_global_zero:
        return
    summary = status.summary() if status is not None else {"status": "ok", "status_reason": ""}
    if error is not None:
        summary["status"] = "failed"
        summary["error"] = f"{type(error).__name__}: {error}"
        summary["status_reason"] = str(summary["error"]).splitlines()[0]
    result = {**summary, "metric": key,
              "score": score if math.isfinite(score) else None,
              "resumed_from": cfg.ckpt_path or None,
              "steps": trainer.global_step if trainer is not None else 0,
              "epochs": trainer.current_epoch if trainer is not None else 0,
              "channels_last": getattr(trainer.lightning_module, "channels_last", None)
              if trainer is not None else None,
              "wall_time_s": clock.elapsed(), "timings_s": clock.summary(),
              "metrics": {k: v for k, v in metrics.items() if math.isfinite(v)}}
    atomic_write(Path(cfg.output_dir) / "result.json",
                 json.dumps(result, indent=2, allow_nan=False, default=str).encode())
