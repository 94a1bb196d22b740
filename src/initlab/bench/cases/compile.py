"""compile: torch.compile (compile=true) against eager, after the compile warm-up."""

from __future__ import annotations

from pathlib import Path

from hydra.utils import instantiate

from initlab.bench.common import Settings, compose_cfg, initlab_fit, training_overrides
from initlab.bench.timing import interleave, summarize


def case_compile(settings: Settings, data_dir: Path, out: Path) -> dict:
    """torch.compile (opt-in ``compile=true``) against eager, after the compile warm-up."""
    steps = 20 if settings.quick else 200
    base = training_overrides(data_dir, steps, out, settings.quick, settings.device) + ["callbacks=none"]
    eager, compiled = compose_cfg(*base), compose_cfg(*base, "compile=true")
    datamodule = instantiate(eager.data)
    datamodule.setup()
    times = interleave({"eager": lambda: initlab_fit(eager, datamodule)[0],
                        "compiled": lambda: initlab_fit(compiled, datamodule)[0]}, settings.rounds)
    return summarize(times, steps, {"compile": ("compiled", "eager")})
