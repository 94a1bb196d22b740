"""framework and monitors: initlab, its monitors and a minimal LightningModule, each fit paired
with a raw loop of the same model."""

from __future__ import annotations

import statistics
from pathlib import Path

from hydra.utils import instantiate

from initlab.bench.common import PAIR_EVERY, Settings, compose_cfg, training_overrides
from initlab.bench.pairing import bootstrap_ratios, interval95, paired_fit, paired_ratio


def case_framework_and_monitors(settings: Settings, data_dir: Path, out: Path) -> dict:
    """initlab (monitors off / default / glorot) and a minimal LightningModule vs a hand-written
    loop of the same model, batch size and optimizer, one epoch per fit: each fit is interleaved
    every ``PAIR_EVERY`` steps with a raw loop that trains a copy of its model on the same
    batches (:func:`paired_fit`), over ``rounds`` fits of each variant in turn after a warm-up;
    ``max_weight_diff``: per variant, the largest weight difference between fit and raw loop
    after an epoch. ``framework`` is initlab without monitors over the raw loop,
    ``lightning_alone`` the minimal module over it (``lightning_barebones``: in Lightning's
    barebones mode), ``initlab_vs_lightning`` the first over the second (what initlab adds to
    Lightning); the monitors' figures divide the monitored fits' ratios by initlab's. Spread:
    the numerator's per-fit ratios' max/min - 1; ``interval``: a 95% bootstrap interval."""
    steps = 20 if settings.quick else 430  # one epoch of 55k at batch 128
    every = 5 if settings.quick else PAIR_EVERY
    base = training_overrides(data_dir, steps, out, settings.quick, settings.device)
    cfgs = {name: compose_cfg(*base, f"callbacks={cb}")
            for name, cb in (("initlab", "none"), ("monitors_default", "default"),
                             ("monitors_glorot", "glorot"))}
    datamodule = instantiate(cfgs["initlab"].data)
    datamodule.setup()
    images, labels = (t.clone().to(settings.device) for t in datamodule.splits["train"])
    # name: (config, a MinimalModule, in barebones mode)
    variants = {**{name: (c, False, False) for name, c in cfgs.items()},
                "lightning": (cfgs["initlab"], True, False),
                "barebones": (cfgs["initlab"], True, True)}
    fits: dict[str, list[dict]] = {name: [] for name in variants}
    for r in range(settings.rounds + 1):  # round 0: the warm-up, not counted
        for name, (variant_cfg, minimal, barebones) in variants.items():
            fit = paired_fit(variant_cfg, datamodule, images, labels, every, minimal=minimal,
                             barebones=barebones)
            for done_with in ("raw", "module", "trainer"):  # only the figures are kept
                del fit[done_with]
            if r > 0:
                fits[name].append(fit)
    per_fit = {name: [paired_ratio([f]) for f in rows] for name, rows in fits.items()}
    pooled = {name: paired_ratio(rows) for name, rows in fits.items()}
    resampled = {name: bootstrap_ratios(rows, seed=i)
                 for i, (name, rows) in enumerate(fits.items())}
    result = {"seconds": {}, "spread": {}, "ratios": {}, "interval": {}, "per_fit": per_fit,
              "steps": steps, "pair_every": every, "rounds": settings.rounds,
              "max_weight_diff": {name: max(f["max_weight_diff"] for f in rows)
                                  for name, rows in fits.items()}}
    for name, rows in fits.items():
        result["seconds"][name] = statistics.median(
            sum(f["fit_s"]) + f["outside_s"] for f in rows)
        result["seconds"][f"{name}_raw"] = statistics.median(sum(f["raw_s"]) for f in rows)
        result["seconds"][f"{name}_outside"] = statistics.median(f["outside_s"] for f in rows)
    # (label, numerator, denominator): each fit's ratio is to its own paired raw seconds
    figures = [("framework", "initlab", None), ("lightning_alone", "lightning", None),
               ("lightning_barebones", "barebones", None),
               ("initlab_vs_lightning", "initlab", "lightning"),
               ("monitors_default", "monitors_default", "initlab"),
               ("monitors_glorot", "monitors_glorot", "initlab")]
    for label, num, den in figures:
        ratio, samples = pooled[num], resampled[num]
        if den is not None:
            ratio, samples = ratio / pooled[den], samples / resampled[den]
        result["ratios"][label] = ratio
        result["interval"][label] = interval95(samples)
        result["spread"][label] = max(per_fit[num]) / min(per_fit[num]) - 1
    return result
