"""Read the runs of a sweep: Hydra's saved config, result.json, init_stats.json, TensorBoard."""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path

from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from initlab.budget import data_name

# Glorot & Bengio Table 1's rows, in the paper's order: (activation, init scheme) -> name
TABLE1_ROWS = {
    ("softsign", "standard"): "Softsign",
    ("softsign", "xavier"): "Softsign N",
    ("tanh", "standard"): "Tanh",
    ("tanh", "xavier"): "Tanh N",
    ("sigmoid", "standard"): "Sigmoid",
}
# Table 1, test error (%) with 5 hidden layers of 1000, per data set (its columns here)
PAPER_TABLE1 = {
    "shapeset": {"Softsign": 16.27, "Softsign N": 16.06, "Tanh": 27.15, "Tanh N": 15.60,
                 "Sigmoid": 82.61},
    "mnist": {"Softsign": 1.64, "Softsign N": 1.72, "Tanh": 1.76, "Tanh N": 1.64,
              "Sigmoid": 2.21},
}
DATA_TITLES = {"shapeset": "Shapeset", "mnist": "MNIST"}


@dataclass
class Run:
    path: Path
    config: dict
    overrides: list[str]
    result: dict | None  # None while the run is still going (or it crashed)
    init_stats: dict | None
    label: str = ""  # the overrides that vary across the sweep, seed excluded
    heartbeat: dict | None = None  # heartbeat.json: host, pid, start time, last sign of life

    @property
    def status(self) -> str:
        """result.json's status; without one, ``running`` or ``lost`` (:meth:`liveness`)."""
        return self.result["status"] if self.result else self.liveness()[0]

    def liveness(self, now: float | None = None) -> tuple[str, str]:
        """(``running`` or ``lost``, why) for a run without result.json: lost when its process
        is gone from this host, or when no sign of life came for ``STALE_AFTER_S`` (its
        heartbeat, or without one the start of the job's folder)."""
        now = time.time() if now is None else now
        beat = self.heartbeat
        if beat is None:
            try:
                age = now - (self.path / ".hydra" / "config.yaml").stat().st_mtime
            except OSError:  # a run folder made by hand: nothing to judge it by
                return "running", "no heartbeat.json"
            if age > STALE_AFTER_S:
                return "lost", f"no heartbeat.json, started {_ago(age)}"
            return "running", f"starting, {_ago(age)}"
        last = datetime.fromisoformat(beat.get("heartbeat") or beat["start_time"]).timestamp()
        where = f"pid {beat['pid']} on {beat['host']}"
        if beat["host"] == socket.gethostname() and not _alive(beat["pid"]):
            return "lost", f"{where} is gone, last heartbeat {_ago(now - last)}"
        if now - last > STALE_AFTER_S:
            return "lost", f"no heartbeat from {where} for {_ago(now - last, ago=False)}"
        return "running", f"{where}, last heartbeat {_ago(now - last)}"

    @property
    def seed(self):
        return self.config.get("seed")

    @property
    def activation(self) -> str:
        return self.config.get("model", {}).get("activation", "?")

    @property
    def init(self) -> str:
        return self.config.get("init", {}).get("scheme", "?")

    @property
    def data(self) -> str:
        """``mnist`` or ``shapeset`` (the data module's class name)."""
        return data_name(self.config.get("data", {}))

    @property
    def table1_row(self) -> str | None:
        """The name of the Table 1 row this run is, else None: an MLP of a row's activation and
        init, run by experiment=glorot_table1 (it sets ``budget``) or of the paper's 5 x 1000."""
        model = self.config.get("model", {})
        paper_shape = model.get("depth") == 5 and model.get("width") == 1000
        if not str(model.get("_target_", "")).endswith("MLP") or not (
                paper_shape or self.budget is not None):
            return None
        return TABLE1_ROWS.get((self.activation, self.init))

    @property
    def paper_row(self) -> tuple[str, float] | None:
        """(the row's name and data set, the paper's test error %) of a Table 1 row."""
        row, column = self.table1_row, PAPER_TABLE1.get(self.data)
        if row is None or column is None:
            return None
        return f"{row}, {DATA_TITLES[self.data]}", column[row]

    @cached_property
    def pilots(self) -> dict | None:
        """pilots.json: the learning rates tried, their validation accuracy, the chosen one."""
        return _load_json(self.path / "pilots.json")

    @property
    def lr(self) -> float | None:
        """The learning rate the run trained with: the pilots' choice, else optim.lr."""
        if self.pilots and "chosen" in self.pilots:
            return self.pilots["chosen"]
        return self.config.get("optim", {}).get("lr")

    @property
    def budget(self) -> str | None:
        """The Table 1 budget (conf/budget) the run was made under."""
        return self.config.get("budget")

    @property
    def shape(self) -> str:
        """The MLP's hidden layers, "5 x 1000"."""
        model = self.config.get("model", {})
        return f"{model.get('depth', '?')} x {model.get('width', '?')}"

    @cached_property
    def events(self) -> EventAccumulator:
        acc = EventAccumulator(str(self.path), size_guidance={"scalars": 0, "histograms": 0})
        acc.Reload()
        return acc

    def scalars(self, tag: str) -> list[tuple[int, float]]:
        """(step, value) sorted by step; of two points at one step, the one written last (a
        resumed run re-logs the steps after its checkpoint)."""
        if tag not in self.events.Tags().get("scalars", []):
            return []
        return sorted({e.step: e.value for e in self.events.Scalars(tag)}.items())

    def scalar_tags(self, prefix: str) -> list[str]:
        return sorted(t for t in self.events.Tags().get("scalars", []) if t.startswith(prefix))

    def histogram(self, tag: str, step: int = 0):
        if tag not in self.events.Tags().get("histograms", []):
            return None
        for event in self.events.Histograms(tag):
            if event.step == step:
                return event.histogram_value
        return None


STALE_AFTER_S = 600.0  # a running job beats every 30 s (initlab.status.Heartbeat)


def _ago(seconds: float, ago: bool = True) -> str:
    text = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
    return f"{text} ago" if ago else text


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _load_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def collect_runs(root: str | Path) -> list[Run]:
    """Every run under ``root`` (a folder with ``.hydra/config.yaml``), ``root`` itself included."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    runs = []
    # job order: 2 before 10 (Hydra numbers a sweep's job folders)
    natural = lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(p))]  # noqa: E731
    for config_path in sorted(root.glob("**/.hydra/config.yaml"), key=natural):
        run_dir = config_path.parent.parent
        overrides_path = run_dir / ".hydra" / "overrides.yaml"
        overrides = OmegaConf.to_container(OmegaConf.load(overrides_path)) \
            if overrides_path.exists() else []
        config = OmegaConf.to_container(OmegaConf.load(config_path), resolve=False)
        runs.append(Run(run_dir, config, [str(o) for o in overrides],
                        _load_json(run_dir / "result.json"), _load_json(run_dir / "init_stats.json"),
                        heartbeat=_load_json(run_dir / "heartbeat.json")))
    if not runs:
        raise FileNotFoundError(f"no runs under {root}: expected folders with .hydra/config.yaml")
    _set_labels(runs)
    return runs


def _set_labels(runs: list[Run]) -> None:
    """Label each run by the overrides that differ between runs, so runs that differ only by
    seed share a label and settings common to the whole sweep do not clutter the tables."""
    def own(run: Run) -> set[str]:
        return {o for o in run.overrides if not o.startswith(("seed=", "hydra.", "output_dir="))}

    common = set.intersection(*(own(r) for r in runs))
    for run in runs:
        run.label = " ".join(sorted(own(run) - common)) or "(all runs)"
