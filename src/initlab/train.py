"""run(cfg): the one place that turns a composed config into objects and trains."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from initlab.checkpointing import (
    AtomicCheckpointIO,
    SaveOnInterrupt,
    check_checkpoint,
    check_output_dir,
)
from initlab.init import apply_init
from initlab.module import Classifier
from initlab.monitors.callbacks import add_layout
from initlab.robustness import check_corruptions, evaluate_corrupted
from initlab.status import RunStatus
from initlab.utils import atomic_write


class ConfigError(ValueError):
    """A configuration value is invalid; raised before any training starts."""


def instantiate_optional(node: Any) -> Any:
    """``None`` for a disabled component (null, or ``_target_: null``), else the object."""
    if node is None or (isinstance(node, DictConfig) and node.get("_target_", "") is None):
        return None
    return instantiate(node)


def check_config(cfg: DictConfig) -> None:
    """Check the values that would otherwise fail late or obscurely."""
    lr = cfg.optim.get("lr")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
        raise ConfigError(f"optim.lr={lr!r} is invalid: it must be a number > 0")
    for key in ("l1", "l2"):
        value = cfg.get(key)
        if not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{key}={value!r} is invalid: it must be a number >= 0")
    check_corruptions(cfg.get("robustness"))


def _metrics_to_floats(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def build(cfg: DictConfig, datamodule: L.LightningDataModule | None = None):
    """Instantiate data (unless given one already set up), model (initialised),
    LightningModule, callbacks, logger and trainer."""
    check_config(cfg)
    output_dir = Path(cfg.output_dir)
    try:
        check_output_dir(output_dir)
        if cfg.ckpt_path:
            check_checkpoint(cfg.ckpt_path)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = datamodule if datamodule is not None else instantiate(cfg.data)
    model = instantiate(cfg.model)
    apply_init(model, **cfg.init, activation=cfg.model.activation)
    if cfg.channels_last:  # conv outputs follow the weights' layout (faster on recent GPUs)
        model = model.to(memory_format=torch.channels_last)
    optimizer = instantiate(cfg.optim)
    try:  # fail now, not at the first step, on values torch rejects (momentum < 0, ...)
        optimizer(model.parameters())
    except ValueError as err:
        raise ConfigError(f"optim: {err} (got {OmegaConf.to_container(cfg.optim)})") from err
    module = Classifier(model, optimizer, instantiate_optional(cfg.scheduler), cfg.l1, cfg.l2,
                        compile=cfg.compile)

    callbacks = [RunStatus(**cfg.status)]
    callbacks += [instantiate(node) for node in cfg.callbacks.values() if node is not None]
    logger = instantiate_optional(cfg.logger)
    if logger is not None:
        callbacks.append(L.pytorch.callbacks.LearningRateMonitor(logging_interval="step"))
    if cfg.checkpoint:
        callbacks += [instantiate(node) for node in cfg.checkpoint.values() if node is not None]
        callbacks.append(SaveOnInterrupt(Path(output_dir) / "checkpoints"))
    if cfg.trainer.get("enable_progress_bar", True) and cfg.progress_bar is not None:
        callbacks.append(instantiate(cfg.progress_bar))
    trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=logger if logger is not None else False,
        enable_checkpointing=bool(cfg.checkpoint),
        default_root_dir=str(output_dir),
        plugins=[AtomicCheckpointIO()],
    )
    return datamodule, module, trainer


def run(cfg: DictConfig) -> float:
    """Train and test one configuration; write ``result.json``; return the metric a sweep
    optimises (test accuracy, or validation accuracy when ``test=false``; NaN if diverged)."""
    start = time.perf_counter()
    datamodule, module, trainer = build(cfg)
    status = next(c for c in trainer.callbacks if isinstance(c, RunStatus))
    if isinstance(trainer.logger, TensorBoardLogger) and trainer.is_global_zero:
        add_layout(trainer.logger)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    except SystemExit:  # Lightning ends an interrupted fit with SystemExit
        if status.status != "interrupted":
            raise
        _write_result(cfg, trainer, status, _metrics_to_floats(trainer.callback_metrics), start)
        raise SystemExit(status.exit_code) from None
    metrics = _metrics_to_floats(trainer.callback_metrics)
    if cfg.test and status.status != "diverged":
        metrics.update(_metrics_to_floats(trainer.test(module, datamodule=datamodule, verbose=False)[0]))
        if cfg.robustness and trainer.is_global_zero:
            corrupted = evaluate_corrupted(module, datamodule, cfg.robustness, seed=cfg.seed)
            for logger in trainer.loggers:
                logger.log_metrics(corrupted, step=trainer.global_step)
            metrics.update(corrupted)
    if trainer.logger is not None:
        params = OmegaConf.to_container(cfg, resolve=True)
        for key in ("checkpoint", "progress_bar", "logger", "output_dir"):
            params.pop(key, None)
        trainer.logger.log_hyperparams(params, metrics={k: v for k, v in metrics.items()
                                                        if k.startswith(("test", "val/"))})
        trainer.logger.finalize("success")
        if hasattr(trainer.logger, "close"):
            trainer.logger.close()
    key = "test/acc" if cfg.test else "val/acc"
    score = math.nan if status.status == "diverged" else metrics.get(key, math.nan)
    _write_result(cfg, trainer, status, metrics, start, key, score)
    if trainer.is_global_zero:
        print(f"status: {status.status}   test accuracy: {metrics.get('test/acc', math.nan):.4f}   "
              f"val accuracy: {metrics.get('val/acc', math.nan):.4f}")
        print(f"inspect with: tensorboard --logdir {cfg.output_dir}")
    return score


def _write_result(cfg, trainer, status: RunStatus, metrics: dict[str, float], start: float,
                  key: str | None = None, score: float = math.nan) -> None:
    """``result.json`` next to the events (rank 0): status, metrics, steps, wall time."""
    if not trainer.is_global_zero:
        return
    result = {**status.summary(), "metric": key,
              "score": score if math.isfinite(score) else None,
              "steps": trainer.global_step, "epochs": trainer.current_epoch,
              "wall_time_s": time.perf_counter() - start,
              "metrics": {k: v for k, v in metrics.items() if math.isfinite(v)}}
    atomic_write(Path(cfg.output_dir) / "result.json",
                 json.dumps(result, indent=2, allow_nan=False, default=str).encode())
