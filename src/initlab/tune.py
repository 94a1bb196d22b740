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

