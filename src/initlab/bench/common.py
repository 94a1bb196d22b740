"""What the cases share: their settings, the machine's description, composing a config,
synthetic MNIST files, and an initlab fit timed whole."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from initlab import project_root
from initlab.data.sources import idx_bytes
from initlab.train import build

ROOT = project_root()
SPREAD_WARNING = 0.10
PAIR_EVERY = 20  # framework and speedrun cases: steps between switches to the raw loop


@dataclass(frozen=True)
class Settings:
    """What every case is run with: ``quick`` (tiny sizes), timed ``rounds``, speedrun
    ``seeds``, and the ``device`` initlab and the raw loops train on."""

    quick: bool = False
    rounds: int = 3
    seeds: int = 5
    device: str = "cpu"


def machine(device: str) -> dict:
    """What the figures were measured on."""
    info = {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available()}
    if device == "cuda":
        try:
            driver = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", "-i", "0"],
                capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            driver = "unknown (nvidia-smi failed)"
        info.update(gpu=torch.cuda.get_device_name(0), driver=driver,
                    cuda_runtime=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return info


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def synthetic_mnist(root: Path, n_train: int, n_test: int) -> Path:
    """Random IDX files of MNIST's shapes, read by the real parser (speed does not need digits)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            idx_bytes(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            idx_bytes(rng.integers(0, 10, n, dtype=np.uint8)))
    return root


def training_overrides(data_dir: Path, steps: int, out: Path, quick: bool,
                       device: str = "cpu") -> list[str]:
    return [f"data.data_dir={data_dir}", "data.verify=false", "data.sources=[local]",
            f"trainer.max_steps={steps}", "trainer.max_epochs=1", "trainer.limit_val_batches=0",
            "trainer.enable_progress_bar=false",
            f"trainer.accelerator={device}", "scheduler=none", "checkpoint=null",
            f"output_dir={out}", "test=false",
            *(["model.channels=[4,8]", "model.hidden=16"] if quick else [])]


def initlab_fit(cfg, datamodule) -> tuple[float, object]:
    _, module, trainer = build(cfg, datamodule=datamodule)
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)  # ends by moving the model to the CPU: synced
    return time.perf_counter() - start, (module, trainer)
