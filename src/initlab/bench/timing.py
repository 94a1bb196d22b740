"""Timing variants against each other: a timer that waits for the device, variants run in turn
over rounds after a warm-up, and their medians, spreads and ratios."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work, so a timer stops when the work is done."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median_and_spread(samples: list[float]) -> tuple[float, float]:
    return statistics.median(samples), max(samples) / min(samples) - 1


def interleave(variants: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run each variant once to warm up, then ``rounds`` times in turn; collect seconds."""
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            times[name].append(fn())
    return times


def summarize(times: dict[str, list[float]], unit_steps: int, pairs: dict) -> dict:
    """Median seconds and spread per variant, and the ratio of each (numerator, denominator)."""
    result = {"seconds": {}, "ratios": {}, "spread": {}}
    for name, samples in times.items():
        med, spread = median_and_spread(samples)
        result["seconds"][name] = med
        result["spread"][name] = spread
    for label, (num, den) in pairs.items():
        result["ratios"][label] = result["seconds"][num] / result["seconds"][den]
    result["steps"] = unit_steps
    return result
