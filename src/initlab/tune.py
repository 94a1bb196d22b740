"""``+tune=lr_find``: Lightning's learning-rate range test before a run, on copies of its
module and data (initlab.train.run calls :func:`find_lr`)."""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
from pathlib import Path

import lightning as L
from omegaconf import DictConfig

from initlab.module import Classifier
from initlab.utils import atomic_write

log = logging.getLogger(__name__)


def with_lr(factory: functools.partial, lr: float) -> functools.partial:
    """The optimizer partial ``factory`` with its learning rate replaced by ``lr``."""
    return functools.partial(factory.func, *factory.args, **{**factory.keywords, "lr": lr})


def module_copy(module: Classifier, optimizer: functools.partial | None = None) -> Classifier:
    """A Classifier on a deep copy of ``module``'s model, with its settings (and ``optimizer``
    in place of its own when given), eager: what a search trains without touching the run."""
    return Classifier(copy.deepcopy(module.model), optimizer or module.optimizer_factory,
                      module.scheduler_factory, module.l1, module.l2,
                      num_classes=module.num_classes, compile=False, seed=module.seed)


def set_lr(cfg: DictConfig, module: Classifier, lr: float) -> None:
    """Train the run at ``lr``: the module's optimizer, and ``cfg.optim.lr`` for the HParams."""
    module.optimizer_factory = with_lr(module.optimizer_factory, lr)
    cfg.optim.lr = lr


def trainer_settings(cfg: DictConfig, keys: tuple[str, ...]) -> dict:
    """The run's ``cfg.trainer`` values of ``keys`` that are set: a search's trainer runs where
    and how the run would."""
    return {k: cfg.trainer[k] for k in keys if cfg.trainer.get(k) is not None}


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
        copy_module = module_copy(module)
        trainer_args = trainer_settings(cfg, ("accelerator", "devices", "precision", "strategy",
                                              "num_nodes", "deterministic"))
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
        set_lr(cfg, module, float(suggestion))
    if tuner_trainer.is_global_zero:
        record = {"lr": lrs, "loss": [v if math.isfinite(v) else None for v in losses],
                  "suggestion": float(suggestion) if suggestion is not None else None,
                  "applied": applied, "min_lr": min_lr, "max_lr": max_lr,
                  "num_training": num_training}
        atomic_write(Path(cfg.output_dir) / "lr_find.json",
                     json.dumps(record, indent=2, allow_nan=False).encode())
    return suggestion

