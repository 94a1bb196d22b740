"""data: batches per second of the data module, augmentation against per-image torchvision."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from hydra.utils import instantiate

from initlab.bench.common import Settings, compose_cfg, training_overrides
from initlab.bench.timing import interleave, summarize, sync
from initlab.data.mnist import to_unit


def case_data(settings: Settings, data_dir: Path, out: Path) -> dict:
    """Batches per second of the data module: plain, and with noise+skew augmentation against
    the same transforms done per image with torchvision on PIL images."""
    from PIL import Image
    from torchvision.transforms import v2

    from initlab.data.augment import Augment

    n = 2_000 if settings.quick else 20_000
    cfg = compose_cfg(*training_overrides(data_dir, 1, out, settings.quick, settings.device))
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    images = datamodule.splits["train"][0][:n].to(settings.device)
    augment = Augment(noise_std=0.1, skew_degrees=15.0, seed=0)
    batch_size = cfg.data.batch_size

    def batched(transform) -> float:
        sync(settings.device)
        start = time.perf_counter()
        for i in range(0, n, batch_size):
            transform(to_unit(images[i: i + batch_size]))
        sync(settings.device)
        return time.perf_counter() - start

    per_image = v2.Compose([v2.RandomAffine(degrees=0, shear=(-15, 15, 0, 0)), v2.PILToTensor(),
                            v2.ToDtype(torch.float32, scale=True)])
    pil_images = [Image.fromarray(img.numpy()) for img in images[: n // 10].cpu()]

    def pil() -> float:  # a tenth of the images: the per-image path is slow
        start = time.perf_counter()
        for img in pil_images:
            x = per_image(img)
            (x + 0.1 * torch.randn_like(x)).clamp_(0, 1)
        return (time.perf_counter() - start) * 10

    times = interleave({"plain": lambda: batched(lambda x: x), "augmented": lambda: batched(augment),
                        "per_image_pil": pil}, settings.rounds)
    result = summarize(times, n, {
        "augmented_vs_per_image": ("per_image_pil", "augmented")})
    result["images_per_s"] = {k: n / v for k, v in result["seconds"].items()}
    return result
