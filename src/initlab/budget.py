"""Table 1's budgets (conf/budget): the time a sweep will take, printed before it starts.

A Hydra callback, loaded at every start of a budget's sweep: imports nothing heavy. The time
is training updates only (validation, the test-error curve and the probes come on top), one
job after another, at the step times below.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

# Seconds per update of the 5 x 1000 MLP at minibatch 10, the glorot monitors on at the cpu
# budget's cadence. CPU: one thread (OMP_NUM_THREADS=1) of the 2-core machine, one 300-step
# tanh run per column (fit time less validation and probes, over 300), measured 2026-12-01
# WHILE THE MACHINE WAS LOADED (load average about 5 on 2 cores): an upper bound; re-measure
# on a quiet machine and change these (and conf/budget/cpu.yaml's max_steps).
CPU_STEP_S = {"mnist": 0.0164, "shapeset": 0.0260}
# GPU: not measured for this MLP (no GPU was lent). The speedrun CNN's step on one H200 (3.2 ms
# at batch 256, docs/performance.md, "On a GPU") is mostly a fixed per-step cost of the training loop, which a
# minibatch-10 MLP step shares: taken as this MLP's until measured.
GPU_STEP_S = 0.0032
GPU_SOURCE = "the speedrun CNN's measured step on one H200 (docs/performance.md), this MLP's not measured"


def data_name(data: Mapping) -> str:
    """``mnist`` or ``shapeset`` from a data config's ``_target_`` (the class name, lowercased,
    without ``DataModule``)."""
    return str(data.get("_target_", "?")).rsplit(".", 1)[-1].removesuffix("DataModule").lower()


def job_count(sweeper_params: Mapping | None, task_overrides: list[str]) -> int:
    """How many jobs Hydra's basic sweeper makes: the product of the sweep lengths, a command
    line override replacing ``hydra.sweeper.params``' value for the same key."""
    values = {str(k): str(v) for k, v in (sweeper_params or {}).items()}
    parser = OverridesParser.create()
    for override in parser.parse_overrides(list(task_overrides)):
        values[override.get_key_element()] = override.input_line.split("=", 1)[1]
    parsed = parser.parse_overrides([f"{k}={v}" for k, v in values.items()])
    return math.prod(len(list(o.sweep_string_iterator())) if o.is_sweep_override() else 1
                     for o in parsed)


def updates_per_job(config: Mapping) -> int:
    """The training steps of one job: its pilots (``pilots.lrs`` x ``pilots.steps``), then
    ``trainer.max_steps``."""
    pilots = config.get("pilots") or {}
    return int(config["trainer"]["max_steps"]) + len(pilots.get("lrs", [])) * int(
        pilots.get("steps", 0))


def _hours(seconds: float) -> str:
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    days = f" = {seconds / 86400:,.1f} days" if seconds > 2 * 86400 else ""
    return f"{seconds / 3600:,.1f} h{days}"


def estimate_lines(budget: str, data: str, jobs: int, updates: int, cpu_step_s: float,
                   gpu_step_s: float) -> list[str]:
    total = jobs * updates
    lines = [f"budget={budget}, data={data}: {jobs} job(s) x {updates:,} updates = {total:,} "
             "updates (one job at a time; evaluations come on top)"]
    if cpu_step_s > 0:
        lines.append(f"  2-core CPU, one thread a job: about {_hours(total * cpu_step_s)} "
                     f"({1000 * cpu_step_s:.1f} ms an update, measured under load: an upper bound)")
    else:
        lines.append(f"  2-core CPU: no step time measured for data={data}")
    lines.append(f"  one GPU: about {_hours(total * gpu_step_s)} ({1000 * gpu_step_s:.1f} ms an "
                 f"update: {GPU_SOURCE})")
    return lines


class EstimateTime(Callback):
    """Prints the budget's estimated time before the first job (a sweep) or the run starts."""

    def __init__(self, cpu_step_s: float | None = None, gpu_step_s: float | None = None):
        self.cpu_step_s, self.gpu_step_s = cpu_step_s, gpu_step_s

    def _print(self, config: DictConfig, jobs: int) -> None:
        data = data_name(config.data)
        cpu = self.cpu_step_s if self.cpu_step_s is not None else CPU_STEP_S.get(data, 0.0)
        gpu = self.gpu_step_s if self.gpu_step_s is not None else GPU_STEP_S
        for line in estimate_lines(config.get("budget", "?"), data, jobs,
                                   updates_per_job(config), cpu, gpu):
            print(line, flush=True)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._print(config, job_count(config.hydra.sweeper.get("params"),
                                      list(config.hydra.overrides.task)))

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._print(config, 1)
