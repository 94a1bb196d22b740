"""A fit paired with a raw loop: the fit pauses every few steps while a raw loop trains a copy of
its model on the same batches, so each of the fit's segments has a raw segment run right after
it, on the same machine state; and the statistics of those pairs (the ratio, bootstrap
resamplings, a 95% interval)."""

from __future__ import annotations

import copy
import time

import lightning as L
import numpy as np
from hydra.utils import instantiate

from initlab.bench.baselines import RawSteps, build_minimal
from initlab.bench.timing import sync
from initlab.module import build_scheduler
from initlab.train import build
from initlab.utils import keep_libraries_out_of_gc, release_libraries_to_gc


class PairedRaw(L.Callback):
    """Interleaves the hand-written loop with an initlab fit: after every ``every`` training
    steps the fit pauses while ``raw`` trains as many steps, so each segment of the fit is
    paired with a raw segment run right after it, on the same machine state (this 2-core
    machine's speed drifts by tens of percent within a minute, which alternating whole fits
    cannot cancel). Records per pair the fit's seconds, the raw seconds and the step count;
    what the fit spends outside its training segments (Lightning's setup and teardown) is the
    fit's total minus both, and counts as the framework's. A fit with an LR schedule gives
    ``raw`` the same one, over the steps Lightning planned for the fit (as
    ``Classifier.configure_optimizers`` builds it)."""

    def __init__(self, every: int, raw: RawSteps | None = None):
        self.raw, self.every = raw, every  # raw: set before the fit starts
        self.fit_s: list[float] = []
        self.raw_s: list[float] = []
        self.steps: list[int] = []

    def on_train_start(self, trainer, pl_module) -> None:
        factory = getattr(pl_module, "scheduler_factory", None)
        if factory is not None:
            self.raw.scheduler = build_scheduler(factory, self.raw.optimizer,
                                                 int(trainer.estimated_stepping_batches))
        sync(pl_module.device)
        self._segment_start, self._step_at_start = time.perf_counter(), trainer.global_step

    def _close_segment(self, trainer, pl_module) -> None:
        steps = trainer.global_step - self._step_at_start
        if steps == 0:
            return
        sync(pl_module.device)
        self.fit_s.append(time.perf_counter() - self._segment_start)
        self.raw_s.append(self.raw(steps))
        self.steps.append(steps)
        self._segment_start, self._step_at_start = time.perf_counter(), trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step - self._step_at_start >= self.every:
            self._close_segment(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._close_segment(trainer, pl_module)


def paired_fit(cfg, datamodule, images, labels, every: int, minimal: bool = False,
               barebones: bool = False) -> dict:
    """One initlab fit (or, ``minimal``, a :class:`~initlab.bench.baselines.MinimalModule` fit,
    with ``barebones`` in Lightning's barebones mode) interleaved with a raw loop (see
    :class:`PairedRaw`) that trains a copy of the fit's model, from the same initial weights, on
    the same batches in the same order (``images``, ``labels``: the training split on the
    device), with an optimizer and LR schedule of the same config, the collector's long-lived
    objects frozen as :func:`initlab.train.run` fits: both do the same work from
    the same state (a model in its first epoch trains ~2% slower a step here than one trained
    for a few epochs, so a raw loop that kept training across fits was not a fair baseline).
    Returns the fit's segments, the raw segments paired with them, the seconds outside the
    segments, ``max_weight_diff`` (the largest difference between the two models' parameters,
    weights and biases, after the fit: 0 when the fit trained exactly what the raw loop did),
    and the ``raw`` loop, ``module`` and ``trainer``."""
    pairing = PairedRaw(every)
    if minimal:
        module, trainer = build_minimal(cfg, [pairing], barebones=barebones)
    else:
        _, module, trainer = build(cfg, datamodule=datamodule, extra_callbacks=[pairing])
    model = copy.deepcopy(module.model).to(images.device)
    pairing.raw = RawSteps(model, instantiate(cfg.optim)(model.parameters()), images, labels,
                           cfg.data.batch_size, cfg.seed)  # the schedule: at the fit's start
    sync(images.device)
    # every variant under the collector regime initlab.train.run fits in: a full collection
    # (0.3-0.6 s here) otherwise lands in a fit's or a raw segment by its allocation count
    keep_libraries_out_of_gc()
    try:
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)  # ends by moving the model to the CPU: synced
        total_s = time.perf_counter() - start
    finally:
        release_libraries_to_gc()
    if sum(pairing.steps) != trainer.global_step:
        raise RuntimeError(f"paired {sum(pairing.steps)} of the fit's {trainer.global_step} steps")
    fitted = dict(module.model.named_parameters())
    diff = max(float((p.detach().cpu() - fitted[name].detach()).abs().max())
               for name, p in model.named_parameters())
    return {"fit_s": pairing.fit_s, "raw_s": pairing.raw_s, "steps": pairing.steps,
            "outside_s": total_s - sum(pairing.fit_s) - sum(pairing.raw_s),
            "max_weight_diff": diff, "raw": pairing.raw, "module": module, "trainer": trainer}


def paired_ratio(fits: list[dict]) -> float:
    """initlab seconds (segments + outside) over the raw seconds of the same steps."""
    return (sum(sum(f["fit_s"]) + f["outside_s"] for f in fits)
            / sum(sum(f["raw_s"]) for f in fits))


def bootstrap_ratios(fits: list[dict], samples: int = 2000, seed: int = 0) -> np.ndarray:
    """:func:`paired_ratio` of ``samples`` resamplings of the (fit, raw) segment pairs of all
    fits together; the seconds outside the segments are kept as measured."""
    fit_s = np.concatenate([f["fit_s"] for f in fits])
    raw_s = np.concatenate([f["raw_s"] for f in fits])
    outside = sum(f["outside_s"] for f in fits)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(fit_s), (samples, len(fit_s)))
    return (fit_s[idx].sum(1) + outside) / raw_s[idx].sum(1)


def interval95(samples: np.ndarray) -> list[float]:
    return [float(v) for v in np.quantile(samples, [0.025, 0.975])]
