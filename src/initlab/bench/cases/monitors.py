"""monitors: the default command as a newcomer runs it (3 epochs, every default on), with the
default monitors and without them (callbacks=none), as whole processes."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from initlab.bench.cases.whole import WHOLE_QUICK, timed_process
from initlab.bench.common import ROOT, Settings
from initlab.bench.timing import median_and_spread


def case_monitors(settings: Settings, data_dir: Path, out: Path) -> dict:
    """``python scripts/train.py`` (callbacks=default) against ``... callbacks=none``, same seed
    and data, alternated (order swapped every round): ``monitors_default_command`` is the
    median of the per-round ratios; ``probe_s`` the median of the monitored runs' own probe
    time (result.json timings_s: step 0 with its Jacobians, every 250 steps, the end)."""
    extra = WHOLE_QUICK if settings.quick else []
    base = [sys.executable, str(ROOT / "scripts" / "train.py"), f"data.data_dir={data_dir}",
            f"trainer.accelerator={settings.device}", *extra]
    times: dict[str, list[float]] = {"default": [], "none": []}
    ratios, probe = [], []
    for r in range(settings.rounds):
        variants = [(cb, out / "monitors" / f"{cb}-{r}") for cb in ("default", "none")]
        seconds = {}
        for cb, run_dir in variants[r % 2:] + variants[:r % 2]:
            seconds[cb] = timed_process(base + [f"callbacks={cb}", f"hydra.run.dir={run_dir}"])
            times[cb].append(seconds[cb])
        ratios.append(seconds["default"] / seconds["none"])
        result = json.loads((variants[0][1] / "result.json").read_text())
        probe.append(result["timings_s"].get("probe", 0.0))
    ratio, ratio_spread = median_and_spread(ratios)
    result = {"ratios": {"monitors_default_command": ratio},
              "ratio_spread": {"monitors_default_command": ratio_spread},
              "seconds": {}, "spread": {}, "probe_s": statistics.median(probe),
              "rounds": settings.rounds,
              # every round, so the noise behind a median can be read
              "per_round": {"ratio": ratios, "probe_s": probe,
                            **{f"callbacks_{cb}_s": samples for cb, samples in times.items()}}}
    for cb, samples in times.items():
        result["seconds"][f"callbacks_{cb}"], result["spread"][f"callbacks_{cb}"] = (
            median_and_spread(samples))
    return result
