"""shapeset: Shapeset-3x2 generation against an SGD step of the paper's 5 x 1000 MLP."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from initlab.bench.common import Settings
from initlab.bench.timing import interleave, summarize, sync
from initlab.data.mnist import to_unit
from initlab.init import apply_init


def case_shapeset(settings: Settings, data_dir: Path, out: Path) -> dict:
    """Shapeset-3x2 generation on --device, in the training stream's chunks, against one SGD
    step of the paper's 5 x 1000 tanh MLP at batch 10 (its 1024 inputs, 9 classes) in the same
    process: generating a step's 10 images should cost under 10% of the step."""
    from initlab.data.shapes import ShapeGenerator
    from initlab.data.shapeset import ShapesetDataModule, generate_chunk
    from initlab.models import MLP

    chunk = ShapesetDataModule().chunk_size
    n = chunk * (2 if settings.quick else 16)
    steps = 20 if settings.quick else 300
    device = torch.device(settings.device)
    gen = ShapeGenerator(device)

    def generate() -> float:
        sync(device)
        start = time.perf_counter()
        for k in range(n // chunk):
            generate_chunk(gen, chunk, 0, "train", 0, 0, k)
        sync(device)
        return time.perf_counter() - start

    torch.manual_seed(0)
    model = apply_init(MLP(depth=5, width=1000, activation="tanh", in_features=1024,
                           num_classes=9), "xavier").to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    images, labels = generate_chunk(gen, steps * 10, 0, "val", 0, 0, 0)
    x_all = (to_unit(images) * 2 - 1).split(10)
    y_all = labels.split(10)

    def mlp_steps() -> float:
        sync(device)
        start = time.perf_counter()
        for x, y in zip(x_all, y_all):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        sync(device)
        return time.perf_counter() - start

    times = interleave({"generate": generate, "mlp_steps": mlp_steps}, settings.rounds)
    result = summarize(times, steps, {})
    rate = n / result["seconds"]["generate"]
    step_s = result["seconds"]["mlp_steps"] / steps
    result["images_per_s"] = {"generate": rate}
    result["mlp_step_s"] = step_s
    result["ratios"] = {"shapeset_batch10_vs_step": 10 / rate / step_s,
                        "shapeset_rate_vs_100k": rate / 100_000}
    return result
