"""Accuracy on corrupted copies of the test set: does a model resist noise and skew?"""

from __future__ import annotations

import torch

from initlab.data.augment import Augment
from initlab.data.mnist import to_unit

KINDS = {"noise": "noise_std", "skew": "skew_degrees"}


def check_corruptions(corruptions: dict | None) -> None:
    for kind, levels in (corruptions or {}).items():
        if kind not in KINDS:
            raise ValueError(f"robustness.{kind} is unknown; allowed kinds: {sorted(KINDS)}")
        for level in levels:
            Augment(**{KINDS[kind]: level})  # raises on a bad level, naming it


@torch.no_grad()
def evaluate_corrupted(model: torch.nn.Module, datamodule, corruptions: dict[str, list[float]],
                       seed: int = 0, batch_size: int = 1000) -> dict[str, float]:
    """``test_corrupt/<kind>_<level>/acc`` for every level, on the whole test split; the
    corruption's random draws come from ``seed`` so every model sees the same corrupted set."""
    was_training = model.training
    model.eval()
    images, labels = datamodule.splits["test"]
    results = {}
    try:
        for kind, levels in corruptions.items():
            for level in levels:
                corrupt = Augment(**{KINDS[kind]: level}, seed=seed)
                correct = torch.zeros((), dtype=torch.long, device=labels.device)
                for start in range(0, len(labels), batch_size):
                    x = to_unit(images[start: start + batch_size])
                    logits = model(datamodule.standardize(corrupt(x)))
                    correct += (logits.argmax(1) == labels[start: start + batch_size]).sum()
                results[f"test_corrupt/{kind}_{level:g}/acc"] = correct.item() / len(labels)
    finally:
        model.train(was_training)
    return results
