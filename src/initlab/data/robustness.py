"""Corrupted copies of the test set: does a model resist noise and skew?

The data module hands them to Lightning as extra test dataloaders and the LightningModule logs
``test_corrupt/<kind>_<level>/acc`` for each, so the model only ever runs inside ``trainer.test``.
"""

from __future__ import annotations

from initlab.data.augment import Augment

KINDS = {"noise": "noise_std", "skew": "skew_degrees"}


def check_corruptions(corruptions: dict | None) -> None:
    for kind, levels in (corruptions or {}).items():
        if kind not in KINDS:
            raise ValueError(f"robustness.{kind} is unknown; allowed kinds: {sorted(KINDS)}")
        for level in levels:
            Augment(**{KINDS[kind]: level})  # raises on a bad level, naming it


def corruption_sets(spec: dict | None, seed: int = 0) -> dict[str, Augment]:
    """``{"test_corrupt/<kind>_<level>": Augment}`` for every level of ``spec`` (the
    ``robustness`` config); the draws come from ``seed`` so every model sees the same set."""
    check_corruptions(spec)
    return {f"test_corrupt/{kind}_{level:g}": Augment(**{KINDS[kind]: level}, seed=seed)
            for kind, levels in (spec or {}).items() for level in levels}
