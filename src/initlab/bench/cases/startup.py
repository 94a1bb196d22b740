"""startup: process start to the end of the first training step of scripts/train.py."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from initlab.bench.common import ROOT, Settings
from initlab.bench.timing import median_and_spread


def case_startup(settings: Settings, data_dir: Path, out: Path) -> dict:
    """Seconds from process start to the end of one training step (an upper bound of the time
    to the first step), for ``python scripts/train.py``."""
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), f"data.data_dir={data_dir}",
           "data.verify=false", "data.sources=[local]", "trainer.max_steps=1", "test=false",
           "logger=none", "checkpoint=null", "callbacks=none", "trainer.limit_val_batches=0",
           f"trainer.accelerator={settings.device}", "trainer.enable_progress_bar=false",
           f"hydra.run.dir={out / 'startup'}"]
    samples = []
    for _ in range(1 if settings.quick else 3):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        samples.append(time.perf_counter() - start)
    med, spread = median_and_spread(samples)
    return {"seconds": {"startup": med}, "spread": {"startup": spread}}
