"""Before a sweep is queued through submitit: the job's request must match the trainer's.

A SLURM request that disagrees with ``trainer.devices``/``num_nodes`` hangs or dies on the
cluster after a wait in the queue; here the sweep stops at once, naming both keys, before the
launcher is even built. A Hydra callback (``conf/train.yaml``): Hydra turns a callback's
exceptions into warnings, so it exits with ``SystemExit``. Imports nothing heavy: it is
loaded at every start.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


def _minutes(max_time: Any) -> float | None:
    """Lightning's ``max_time`` as "DD:HH:MM:SS" or a dict of timedelta keywords, in minutes."""
    if isinstance(max_time, str):
        try:
            days, hours, minutes, seconds = (int(p) for p in max_time.split(":"))
        except ValueError:  # not Lightning's format: the Trainer will say so
            return None
        return days * 1440 + hours * 60 + minutes + seconds / 60
    if isinstance(max_time, (dict, DictConfig)):
        scale = {"weeks": 10080, "days": 1440, "hours": 60, "minutes": 1, "seconds": 1 / 60}
        return sum(scale[k] * float(v) for k, v in max_time.items())
    return None


def launcher_problems(launcher: Mapping, trainer: Mapping, local: bool = False) -> list[str]:
    """What disagrees between a submitit request (``hydra.launcher``'s parameters) and one job's
    ``trainer``; empty when they agree. ``local``: submitit's local executor."""
    devices, num_nodes = trainer.get("devices"), trainer.get("num_nodes", 1)
    tasks, nodes = launcher.get("tasks_per_node", 1), launcher.get("nodes", 1)
    gpus, accelerator = launcher.get("gpus_per_node"), trainer.get("accelerator")
    problems = []
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        problems.append(f"trainer.devices={devices!r}: give a number under submitit, the devices "
                        "each node's tasks train on")
    elif local:
        # the local executor starts one process per task, none of them a DDP rank Lightning knows
        if tasks != 1 or nodes != 1:
            problems.append(f"hydra.launcher.tasks_per_node={tasks}, nodes={nodes}: the local "
                            "executor runs one process per job (1 and 1)")
        if devices > 1 and trainer.get("strategy") != "ddp_spawn":
            problems.append(f"trainer.devices={devices} with trainer.strategy="
                            f"{trainer.get('strategy', 'auto')!r}: in a local submitit job Lightning would "
                            "re-launch submitit's command for its ranks; use trainer.strategy=ddp_spawn")
    else:
        if tasks != devices:
            problems.append(f"hydra.launcher.tasks_per_node={tasks} but trainer.devices={devices}: "
                            "SLURM starts one task per device")
        if nodes != num_nodes:
            problems.append(f"hydra.launcher.nodes={nodes} but trainer.num_nodes={num_nodes}")
        if gpus and accelerator == "cpu":
            problems.append(f"hydra.launcher.gpus_per_node={gpus} with trainer.accelerator=cpu: "
                            "set hydra.launcher.gpus_per_node=0 on a CPU partition")
        elif gpus and gpus != devices:
            problems.append(f"hydra.launcher.gpus_per_node={gpus} but trainer.devices={devices}: "
                            "one GPU per task")
        elif not gpus and accelerator in ("gpu", "cuda"):
            problems.append(f"trainer.accelerator={accelerator} but hydra.launcher.gpus_per_node="
                            f"{gpus!r}: the job would get no GPU")
    timeout = launcher.get("timeout_min")
    delay = launcher.get("signal_delay_s")
    if timeout is not None and delay is not None and delay >= 60 * timeout:
        problems.append(f"hydra.launcher.signal_delay_s={delay} is not shorter than timeout_min="
                        f"{timeout}: the warning would come before the job starts")
    budget = _minutes(trainer.get("max_time"))
    if timeout is not None and budget is not None and budget >= timeout:
        problems.append(f"trainer.max_time={trainer.get('max_time')} is not shorter than "
                        f"hydra.launcher.timeout_min={timeout}: the time limit would cut the run first")
    return problems


# trainer keys the request is built from: one value per sweep (one request per sweep)
REQUEST_KEYS = ("trainer", "trainer.devices", "trainer.num_nodes", "trainer.accelerator",
                "trainer.strategy", "trainer.max_time")


def sweep_problems(overrides: list[str]) -> list[str]:
    """Sweeps over the keys a submitit request is built from: all jobs of a sweep are queued
    with one request, built before the jobs' own configs are composed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return [f"{o.input_line}: sweep trainer's devices, nodes and accelerator in separate "
            "multiruns (one request per sweep)"
            for o in OverridesParser.create().parse_overrides(overrides)
            if o.is_sweep_override() and o.key_or_group.lstrip("+~") in REQUEST_KEYS]


def check_launcher(config: DictConfig) -> None:
    """Exit, naming every disagreement, when ``hydra.launcher`` is submitit's and its request
    does not match ``trainer``."""
    launcher = config.hydra.launcher
    target = str(launcher.get("_target_", ""))
    if "hydra_submitit_launcher" not in target:
        return
    trainer = OmegaConf.to_container(config.trainer, resolve=True)
    problems = sweep_problems(list(config.hydra.overrides.task))
    try:
        request = OmegaConf.to_container(launcher, resolve=True)
    except OmegaConfBaseException:  # a trainer value the typed request cannot hold (devices=auto)
        request = {}
    problems += launcher_problems(request, trainer, local=target.endswith("LocalLauncher"))
    if problems:
        raise SystemExit("hydra/launcher: the submitit request does not match the trainer, "
                         "nothing was queued:\n  " + "\n  ".join(problems))


class CheckLauncher(Callback):
    """Hydra callback: :func:`check_launcher` at the start of a multirun, before the sweeper and
    its launcher are built."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_launcher(config)
