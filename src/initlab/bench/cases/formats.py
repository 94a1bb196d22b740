"""formats: the default CNN channels-last against channels-first, two raw loops alternated."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from hydra.utils import instantiate

from initlab.bench.baselines import RawSteps
from initlab.bench.common import Settings, compose_cfg, training_overrides


def case_formats(settings: Settings, data_dir: Path, out: Path) -> dict:
    """The default CNN's memory formats, paired: two raw loops from the same initial weights,
    one channels-first and one channels-last, alternating 20-step segments (order swapped every
    segment) at the speedrun's batch (256) and the default's (128). ``channels_last_vs_first``:
    the channels-last loop's seconds over the channels-first loop's, per batch size: what
    ``channels_last=auto`` is chosen by."""
    cfg = compose_cfg(*training_overrides(data_dir, 1, out, settings.quick, settings.device))
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    images, labels = (t.to(settings.device) for t in datamodule.splits["train"])
    segments, steps = (4, 5) if settings.quick else (20, 20)
    result = {"ratios": {}, "seconds": {}}
    for batch_size in (256, 128):
        torch.manual_seed(cfg.seed)
        base = instantiate(cfg.model).to(settings.device)
        loops = {}
        for name, memory_format in (("first", torch.contiguous_format),
                                    ("last", torch.channels_last)):
            model = copy.deepcopy(base).to(memory_format=memory_format)
            loops[name] = RawSteps(model, instantiate(cfg.optim)(model.parameters()), images,
                                   labels, batch_size, cfg.seed)
            loops[name](2)  # warm-up
        seconds = {"first": 0.0, "last": 0.0}
        for segment in range(segments):
            for name in ("first", "last") if segment % 2 == 0 else ("last", "first"):
                seconds[name] += loops[name](steps)
        result["seconds"].update({f"batch{batch_size}_channels_{n}": v for n, v in seconds.items()})
        result["ratios"][f"batch{batch_size}_channels_last_vs_first"] = seconds["last"] / seconds["first"]
    return result
