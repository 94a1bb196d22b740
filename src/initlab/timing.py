"""Where a run's wall clock goes (result.json's ``timings_s``), on one origin, with validation
time measured once (:class:`ValidationClock`, which the TrainClock monitor extends)."""

from __future__ import annotations

import contextlib
import time

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn

from initlab.utils import process_age_s


class ValidationClock(L.Callback):
    """Seconds spent validating inside a fit (the sanity check included; not
    ``trainer.validate``): the one measurement of validation time, result.json's
    ``timings_s.validation``. CUDA is synchronised before each reading, so queued kernels are
    counted where they ran. ``build`` adds one unless the callbacks hold one already (a
    TrainClock)."""

    def __init__(self):
        self.fit_start: float | None = None
        self.validation_s = 0.0
        self.validation_end: float | None = None  # the reading at the last validation's end
        self._validation_start: float | None = None
        self._validations = 0

    @staticmethod
    def now(pl_module) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    @property
    def timings_s(self) -> dict[str, float]:
        return {"validation": self.validation_s} if self._validations else {}

    def on_fit_start(self, trainer, pl_module) -> None:
        self.fit_start, self.validation_s = self.now(pl_module), 0.0

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == TrainerFn.FITTING and self.fit_start is not None:
            self._validation_start = self.now(pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._validation_start is None:
            return
        self.validation_end = self.now(pl_module)
        self.validation_s += self.validation_end - self._validation_start
        self._validation_start = None
        self._validations += 1


class RunClock(L.Callback):
    """Marks, on a :class:`Timings`, the start of the first training batch this process runs
    (the batch already fetched, the forward not yet run), and adds to it the corrupted test
    sets (the test loaders after the clean one, inside ``test``): from the end of the clean
    set's last batch, so the first corrupted set's corrupting, done as its first batch is
    fetched, counts with the rest. Host clock: on CUDA a phase ends when its last result is
    read back."""

    def __init__(self, clock: Timings):
        self.clock = clock
        self._clean_end: float | None = None
        self._robustness_start: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.clock.first_step is None:
            self.clock.first_step = self.clock.age()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                          dataloader_idx=0) -> None:
        if dataloader_idx == 0:
            self._clean_end = time.perf_counter()

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if dataloader_idx > 0 and self._robustness_start is None:
            self._robustness_start = self._clean_end or time.perf_counter()

    def on_test_end(self, trainer, pl_module) -> None:
        if self._robustness_start is not None:
            self.clock.add("robustness", time.perf_counter() - self._robustness_start)
        self._robustness_start = self._clean_end = None


class Timings:
    """Where a run's wall clock goes, for result.json's ``timings_s``, every value in seconds
    from one origin: the process start for the first run of a process, ``run()`` for a later
    one (a multirun's next job in the same process). ``startup``: origin to run() (imports,
    config; 0 for a later run); the phases of run() (``build``, ``tune`` with
    ``+tune=lr_find``, ``pilots`` with ``pilots`` set, ``fit``, ``test``, ``logging``); inside
    them ``data_load`` (reading and checking MNIST), ``checkpoint_writes``, ``validation``
    (inside fit, by the ValidationClock), ``robustness`` (the corrupted test sets, inside
    test) and ``probe`` (the probe monitor's measurements, step 0 included, inside fit), each
    present when it happened;
    ``first_step``: origin to the start of the first training step (imports, config, build,
    data load, Lightning's setup; absent if it ran none); ``total``: origin to the result.
    Callbacks that time themselves contribute their ``timings_s`` dict."""

    _process_ran_one = False  # a later run in this process did not pay for its start

    def __init__(self):
        self.start = time.perf_counter()
        self.startup = 0.0 if Timings._process_ran_one else process_age_s()
        Timings._process_ran_one = True
        self.first_step: float | None = None
        self.phases: dict[str, float] = {}
        self._datamodule = self._checkpoint_io = None
        self._callbacks: list = []

    def callback(self) -> RunClock:
        return RunClock(self)

    def age(self) -> float:
        """Seconds since the origin, the clock of ``first_step`` and ``total``."""
        return time.perf_counter() - self.start + (self.startup or 0.0)

    def add(self, name: str, seconds: float) -> None:
        self.phases[name] = self.phases.get(name, 0.0) + seconds

    @contextlib.contextmanager
    def phase(self, name: str):
        begin = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - begin)

    def watch(self, trainer, datamodule) -> None:
        self._datamodule, self._checkpoint_io = datamodule, trainer.strategy.checkpoint_io
        self._callbacks = trainer.callbacks

    def summary(self) -> dict[str, float]:
        parts = {"startup": self.startup, **self.phases,
                 "first_step": self.first_step,
                 "data_load": getattr(self._datamodule, "load_seconds", None),
                 "checkpoint_writes": getattr(self._checkpoint_io, "seconds", None)}
        for callback in self._callbacks:
            parts.update(getattr(callback, "timings_s", {}))
        return {**{k: round(v, 3) for k, v in parts.items() if v is not None},
                "total": round(self.age(), 3)}
