"""Learning-rate pilots (``pilots: {lrs, steps}``, set by ``budget=cpu``): before the real fit,
one short training per rate from the run's own initial weights, on the run's own data stream,
each validated at its end; the rate with the best validation accuracy trains the run."""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.seed import isolate_rng
from omegaconf import DictConfig

from initlab.module import Classifier
from initlab.tune import module_copy, set_lr, trainer_settings, with_lr
from initlab.utils import atomic_write

log = logging.getLogger(__name__)

PILOT_KEYS = ("lrs", "steps")


def check_pilots(pilots: DictConfig | None) -> None:
    """``pilots``: null, or ``lrs`` (a non-empty list of numbers > 0) and ``steps`` (>= 1)."""
    if pilots is None:
        return
    unknown = sorted(set(pilots) - set(PILOT_KEYS))
    if unknown:
        raise ValueError(f"pilots has unknown keys {unknown}; allowed: {list(PILOT_KEYS)}")
    lrs = pilots.get("lrs")
    if not lrs or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0
                      for v in lrs):
        raise ValueError(f"pilots.lrs={lrs!r} is invalid: it must be a non-empty list of "
                         "numbers > 0")
    steps = pilots.get("steps")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"pilots.steps={steps!r} is invalid: it must be an integer >= 1")


def best_lr(lrs: list[float], val_acc: list[float | None]) -> float:
    """The rate with the highest validation accuracy; a pilot without one (diverged) never
    wins; of equal accuracies the smaller rate."""
    scored = [(acc if acc is not None and math.isfinite(acc) else -math.inf, -lr, lr)
              for lr, acc in zip(lrs, val_acc)]
    return max(scored)[2]


def run_pilots(cfg: DictConfig, module: Classifier, datamodule) -> dict:
    """Train one pilot per rate, choose, set the module's optimizer (and ``cfg.optim.lr``, for
    the HParams) to the chosen rate; write ``pilots.json`` (rank 0). A relaunched run whose
    folder holds the same pilots' ``pilots.json`` takes its choice without training them again.
    The random state is restored after every pilot: the real run draws what it would have."""
    pilots = cfg.pilots
    lrs, steps = [float(v) for v in pilots.lrs], int(pilots.steps)
    path = Path(cfg.output_dir) / "pilots.json"
    record = _load(path)
    if not (record and record.get("lrs") == lrs and record.get("steps") == steps):
        datamodule.setup("fit")
        val_acc, val_loss = [], []
        for lr in lrs:
            acc, loss = _pilot(cfg, module, datamodule, lr, steps)
            val_acc.append(acc)
            val_loss.append(loss)
            log.info("pilot lr=%g: %d steps, val/acc %s", lr, steps,
                     "-" if acc is None else f"{acc:.4f}")
        record = {"lrs": lrs, "steps": steps, "val_acc": val_acc, "val_loss": val_loss,
                  "chosen": best_lr(lrs, val_acc)}
        atomic_write(path, json.dumps(record, indent=2, allow_nan=False).encode())
    chosen = record["chosen"]
    set_lr(cfg, module, chosen)
    log.info("learning rate chosen by the pilots: %g", chosen)
    return record


def _pilot(cfg: DictConfig, module: Classifier, datamodule, lr: float, steps: int
           ) -> tuple[float | None, float | None]:
    """(val/acc, val/loss) of a copy of ``module`` trained ``steps`` steps at ``lr``; None
    where not finite."""
    with isolate_rng():
        pilot = module_copy(module, with_lr(module.optimizer_factory, lr))
        trainer_args = trainer_settings(cfg, ("accelerator", "devices", "precision",
                                              "deterministic"))
        bare = dict(logger=False, callbacks=[], enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False,
                    default_root_dir=str(cfg.output_dir))
        data = copy.deepcopy(datamodule)
        # no validation during the pilot: one at its end, by a second trainer
        L.Trainer(**trainer_args, **bare, max_epochs=-1, max_steps=steps, limit_val_batches=0,
                  num_sanity_val_steps=0).fit(pilot, datamodule=data)
        metrics = L.Trainer(**trainer_args, **bare).validate(pilot, datamodule=data,
                                                             verbose=False)[0]
    acc, loss = metrics.get("val/acc"), metrics.get("val/loss")
    return (_finite(acc), _finite(loss))


def _finite(value) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
