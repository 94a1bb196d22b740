"""run(cfg): the one place that turns a composed config into objects and trains."""

from __future__ import annotations

import contextlib
import json
import logging
import math
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
from initlab.config import ConfigError, check_config, check_folders
from initlab.console import say
from initlab.init import apply_init
from initlab.module import Classifier, build_scheduler
from initlab.pilots import run_pilots
from initlab.status import Heartbeat, RunStatus, ValidateAtMaxSteps
from initlab.timing import Timings, ValidationClock
from initlab.tune import find_lr
from initlab.utils import (
    atomic_write,
    keep_libraries_out_of_gc,
    release_libraries_to_gc,
    retain_freed_memory,
)

__all__ = ["ConfigError", "build", "channels_last_in_effect", "eval_batch_in_effect", "run"]

log = logging.getLogger(__name__)


def instantiate_optional(node: Any) -> Any:
    """``None`` for a disabled component (null, or ``_target_: null``), else the object."""
    if node is None or (isinstance(node, DictConfig) and node.get("_target_", "") is None):
        return None
    return instantiate(node)


def channels_last_in_effect(setting: str | bool, model: torch.nn.Module,
                            device: torch.device) -> bool:
    """``channels_last=auto``: the memory format that measured fastest for a model with
    convolutions on the device (docs/performance.md): channels-last on the CPU (0.70-0.74x the time
    of channels-first, paired raw loops of the default CNN, 2-core CPU), channels-first on CUDA
    (fp32 channels-last 1.10x the time of the speedrun on an H200). A model without
    convolutions keeps its format."""
    if setting != "auto":
        return bool(setting)
    has_conv = any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())
    return has_conv and device.type == "cpu"


EVAL_BATCH_MAX = 1000
EVAL_ACTIVATION_BYTES = 16 << 20  # half glibc's 32 MiB mmap threshold (initlab.utils)


def largest_output_bytes(model: torch.nn.Module, input_shape: tuple[int, ...]) -> int:
    """Bytes of the largest tensor any submodule of ``model`` outputs for one example of
    ``input_shape``: one forward in evaluation mode, without gradients, the random streams
    and the training mode left as they were."""
    sizes: list[int] = []

    def record(module, inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel() * output.element_size())

    parameter = next(model.parameters(), None)
    example = torch.zeros(1, *input_shape, device=parameter.device if parameter is not None
                          else "cpu")
    hooks = [m.register_forward_hook(record) for m in model.modules()]
    was_training = model.training
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model.eval()
            model(example)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return max(sizes)


def eval_batch_in_effect(setting: str | int, model: torch.nn.Module,
                         input_shape: tuple[int, ...], device: torch.device) -> int:
    """``data.eval_batch_size=auto``: on the CPU, the largest power of two whose largest layer
    output stays within 16 MiB, at most 1000 (docs/performance.md): past glibc's 32 MiB mmap
    threshold each batch's activations are fresh pages, and the default CNN at 1000 took 135k
    page faults and 0.37-0.54 s a pass of the test set against 0.17-0.29 s at 128-256; the
    5 x 1000 MLP is fastest at 1000 (0.52 s, 0.57 s at 256). On CUDA 1000 (not measured
    against other sizes on a GPU). Evaluation results do not depend on it (accuracies are
    counts; losses are batch-size-weighted means)."""
    if setting != "auto":
        return int(setting)
    if device.type != "cpu":
        return EVAL_BATCH_MAX
    fits = EVAL_ACTIVATION_BYTES // largest_output_bytes(model, input_shape)
    if fits >= EVAL_BATCH_MAX:
        return EVAL_BATCH_MAX
    return 1 << (fits.bit_length() - 1) if fits > 1 else 1


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
    """Check the config (initlab.config), then instantiate data (unless given one already
    set up), model (initialised), LightningModule, callbacks (``extra_callbacks`` first),
    logger and trainer."""
    check_config(cfg)
    output_dir = Path(cfg.output_dir)
    # before find_lr may change optim.lr: the config as launched, saved with every checkpoint
    launched = OmegaConf.to_container(cfg, resolve=True)
    try:
        check_output_dir(output_dir)
        check_folders(cfg)
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
    callbacks += [instantiate(node) for node in cfg.callbacks.values() if node is not None]
    if not any(isinstance(c, ValidationClock) for c in callbacks):
        callbacks.insert(0, ValidationClock())  # result.json's validation time; a TrainClock is one
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
    device = trainer.strategy.root_device
    module.channels_last = channels_last_in_effect(cfg.channels_last, model, device)
    if module.channels_last:
        model.to(memory_format=torch.channels_last)
    if getattr(datamodule, "eval_batch_size", None) == "auto":
        datamodule.eval_batch_size = eval_batch_in_effect(
            "auto", model, tuple(datamodule.input_shape), device)
    return datamodule, module, trainer


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
    keep_libraries_out_of_gc()
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
    finally:
        release_libraries_to_gc()
    key = "test/acc" if cfg.test else "val/acc"
    score = math.nan if status.status == "diverged" else metrics.get(key, math.nan)
    _write_result(cfg, trainer, status, metrics, clock, key, score)
    if trainer.is_global_zero:
        say(f"status: {status.status} ({status.reason})")
        say(f"test accuracy: {metrics.get('test/acc', math.nan):.4f}   "
            f"val accuracy: {metrics.get('val/acc', math.nan):.4f}   steps: {trainer.global_step}")
        say(f"inspect with: tensorboard --logdir {cfg.output_dir}")
    return score


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
    """``result.json`` next to the events (rank 0): status, metrics, steps, and where the
    wall clock went (``timings_s``, its ``total`` the run's wall time); a run that raised is
    ``failed`` with the error."""
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
              "eval_batch_size": getattr(trainer.datamodule, "eval_batch_size", None)
              if trainer is not None else None,
              "timings_s": clock.summary(),
              "metrics": {k: v for k, v in metrics.items() if math.isfinite(v)}}
    atomic_write(Path(cfg.output_dir) / "result.json",
                 json.dumps(result, indent=2, allow_nan=False, default=str).encode())
