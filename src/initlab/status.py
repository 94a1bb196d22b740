"""A run's outcome as science: ok, diverged (loss not finite, or blown up past a bound set by
the first step's loss) or stalled (ends at chance); or interrupted (Ctrl-C, SIGTERM). Each
verdict comes with the measurement it was decided from (``reason``)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from initlab.utils import atomic_write, weight_layers

BLOWUP_NORM = 1e6  # a weight-gradient norm above this counts as blown up
NONE_BAD = 2**62  # "no non-finite loss yet", as a step index on the device


class RunStatus(L.Callback):
    """Marks a run ``diverged`` when its loss stops being finite or exceeds ``blowup_factor``
    times the first step's loss (the loss at initialization; None: no such bound), and stops
    it; ``stalled`` when it ends below ``stall_accuracy``, judged on the last validation
    accuracy, else the clean test accuracy, else the training accuracy of the last epoch's
    batches; ``interrupted`` on Ctrl-C or SIGTERM. ``reason`` says which measurement decided.

    A step costs no device op: its loss tensor is kept; at most every ``FOLD`` steps the kept
    losses fold, on the device, into the first step whose loss was not finite or past the
    bound, and the host reads that, and each layer's weight-gradient norm, every
    ``check_every_n_steps`` steps and at the end. A diverged run records ``diverged_step`` (that
    first step, exact at any cadence) and ``diverged_loss`` (its loss), ``diverged_layer`` (the
    input-most layer whose weight-gradient norm was first seen non-finite or above 1e6) and
    ``blowup_step`` (the step at which that was seen: checked steps, and the step it stopped).
    """

    def __init__(self, check_every_n_steps: int = 50, stall_accuracy: float = 0.2,
                 blowup_factor: float | None = 100.0):
        self.check_every_n_steps = check_every_n_steps
        self.stall_accuracy = stall_accuracy
        self.blowup_factor = blowup_factor
        self.status = "ok"
        self.reason = "no step trained"
        self.diverged_step: int | None = None
        self.diverged_loss: float | None = None
        self.diverged_layer: str | None = None
        self.blowup_step: int | None = None
        self.best_val_acc = -math.inf
        self.last_val_acc: float | None = None
        self.first_loss: float | None = None  # the first trained step's loss, as a float
        self.accuracy_basis: str | None = None  # "val", "test" or "train": what decided stalled/ok
        self.final_accuracy: float | None = None
        self.exit_code = 0
        self._first_blowup: dict[str, int] = {}
        self._losses: list[torch.Tensor] = []  # the losses of the steps since the last fold
        self._loss_steps: list[int] = []  # their step indices
        self._first_bad: torch.Tensor | None = None  # first step past the bound, or NONE_BAD
        self._first_bad_loss: torch.Tensor | None = None  # that step's loss
        self._reference: torch.Tensor | None = None  # the first step's loss, on the device

    def on_fit_start(self, trainer, pl_module) -> None:
        self._layers = weight_layers(pl_module.model)

    def _due(self, trainer) -> bool:
        return trainer.global_step % self.check_every_n_steps == 0

    def _record_blowups(self, step: int) -> None:
        grads = [m.weight.grad for m in self._layers.values()]
        if any(g is None for g in grads):
            return
        norms = torch.stack(torch._foreach_norm(grads))
        blown = (~torch.isfinite(norms) | (norms > BLOWUP_NORM)).tolist()
        for name, is_blown in zip(self._layers, blown):
            if is_blown:
                self._first_blowup.setdefault(name, step)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self._due(trainer):
            self._record_blowups(trainer.global_step)

    FOLD = 256  # at most this many losses kept between folds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if self._reference is None:  # kept on the device: reading it would sync every run
            self._reference = (loss.detach().clone() if self.first_loss is None
                               else torch.tensor(self.first_loss, device=loss.device))
        self._losses.append(loss.detach())
        self._loss_steps.append(trainer.global_step - 1)  # this batch's optimizer step
        if len(self._losses) >= self.FOLD:
            self._fold()
        if self._due(trainer):
            self._check(trainer)

    def _fold(self) -> None:
        """The kept losses into ``_first_bad``, on their device, without a host transfer."""
        if not self._losses:
            return
        losses = torch.stack(self._losses)
        bad = ~torch.isfinite(losses)
        if self.blowup_factor is not None:
            bad |= losses > self.blowup_factor * self._reference
        steps = torch.tensor(self._loss_steps).to(bad.device, non_blocking=True)
        keyed = torch.where(bad, steps, NONE_BAD)
        index = keyed.argmin()
        first, first_loss = keyed[index], losses[index]
        if self._first_bad is None:
            self._first_bad, self._first_bad_loss = first, first_loss
        else:
            earlier = first < self._first_bad
            self._first_bad = torch.where(earlier, first, self._first_bad)
            self._first_bad_loss = torch.where(earlier, first_loss, self._first_bad_loss)
        self._losses, self._loss_steps = [], []

    def on_train_end(self, trainer, pl_module) -> None:
        self._check(trainer)
        if self._reference is not None and self.first_loss is None:
            self.first_loss = float(self._reference)
        if self.last_val_acc is not None:
            self._judge("val", self.last_val_acc)
        else:  # no validation: the training accuracy, until a test says more (on_test_end)
            acc = trainer.callback_metrics.get("train/acc_epoch")
            if acc is not None:
                self._judge("train", float(acc))

    def on_test_end(self, trainer, pl_module) -> None:
        acc = trainer.callback_metrics.get("test/acc")
        if self.last_val_acc is None and acc is not None:
            self._judge("test", float(acc))

    WHAT = {"val": "val accuracy", "test": "test accuracy (no validation ran)",
            "train": "training accuracy of the last epoch's batches (no validation or test ran)"}

    def _judge(self, basis: str, accuracy: float) -> None:
        """``stalled`` or ``ok`` from ``accuracy``; a diverged or interrupted run stays so."""
        if self.status not in ("ok", "stalled"):
            return
        self.accuracy_basis, self.final_accuracy = basis, accuracy
        stalled = not accuracy >= self.stall_accuracy  # NaN accuracy: stalled too
        self.status = "stalled" if stalled else "ok"
        what, *note = self.WHAT[basis].split(" (")
        self.reason = (f"{what} {accuracy:.3f} {'<' if stalled else '>='} stall_accuracy "
                       f"{self.stall_accuracy:g}" + (f" ({note[0]}" if note else ""))

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.status = "interrupted"
            self.exit_code = 130  # the shell's code for SIGINT
            self.reason = f"Ctrl-C at step {trainer.global_step}"
        elif isinstance(exception, SIGTERMException):
            self.status = "interrupted"
            self.exit_code = 143  # SIGTERM: tells a scheduler the job did not finish
            self.reason = f"SIGTERM at step {trainer.global_step}"

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        acc = trainer.callback_metrics.get("val/acc")
        if acc is not None and not trainer.sanity_checking:
            self.last_val_acc = float(acc)
            self.best_val_acc = max(self.best_val_acc, self.last_val_acc)

    def _check(self, trainer) -> None:
        self._fold()
        if self.status == "diverged" or self._first_bad is None:
            return
        first_bad = int(self._first_bad)
        first_bad = -1 if first_bad == NONE_BAD else first_bad
        # every rank takes the same decision (a collective only on check steps)
        if not trainer.strategy.reduce_boolean_decision(first_bad >= 0, all=False):
            return
        self.status = "diverged"
        trainer.should_stop = True
        self.diverged_step = first_bad if first_bad >= 0 else None
        if first_bad >= 0:
            self.diverged_loss = float(self._first_bad_loss)
        self.reason = self._divergence_reason()
        if not self._first_blowup:  # not seen on a checked step: the last batch's gradients
            self._record_blowups(trainer.global_step - 1)
        if self._first_blowup:  # dicts keep insertion order: ties go to the input side
            self.diverged_layer = min(self._first_blowup, key=self._first_blowup.get)
            self.blowup_step = self._first_blowup[self.diverged_layer]

    def _divergence_reason(self) -> str:
        step, loss = self.diverged_step, self.diverged_loss
        if step is None:  # seen by another rank only
            return "loss not finite on another rank"
        if not math.isfinite(loss):
            return f"loss {loss} at step {step} (not finite)"
        return (f"loss {loss:.3g} at step {step} > blowup_factor {self.blowup_factor:g} x "
                f"first-step loss {float(self._reference):.3g}")

    def state_dict(self) -> dict:
        """Saved in checkpoints: a resumed run keeps its best accuracy, its reference loss and
        its verdicts."""
        first_loss = self.first_loss
        if first_loss is None and self._reference is not None:
            first_loss = float(self._reference)
        return {"status": self.status, "reason": self.reason,
                "diverged_step": self.diverged_step, "diverged_loss": self.diverged_loss,
                "diverged_layer": self.diverged_layer, "blowup_step": self.blowup_step,
                "best_val_acc": self.best_val_acc, "last_val_acc": self.last_val_acc,
                "first_loss": first_loss, "first_blowup": dict(self._first_blowup)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.status = state_dict["status"] if state_dict["status"] != "interrupted" else "ok"
        self.reason = state_dict.get("reason", self.reason)
        self.diverged_step = state_dict["diverged_step"]
        self.diverged_loss = state_dict.get("diverged_loss")
        self.diverged_layer = state_dict["diverged_layer"]
        self.blowup_step = state_dict["blowup_step"]
        self.best_val_acc = state_dict["best_val_acc"]
        self.last_val_acc = state_dict.get("last_val_acc")
        self.first_loss = state_dict.get("first_loss")  # older checkpoints: the resumed step's
        self._first_blowup = dict(state_dict["first_blowup"])

    def summary(self) -> dict:
        loss = self.diverged_loss
        return {"status": self.status, "status_reason": self.reason,
                "diverged_step": self.diverged_step,
                # JSON has no NaN/inf: a non-finite loss is written as its name
                "diverged_loss": loss if loss is None or math.isfinite(loss) else str(loss),
                "diverged_layer": self.diverged_layer, "blowup_step": self.blowup_step,
                "first_loss": self.first_loss,
                "accuracy_basis": self.accuracy_basis, "final_accuracy": self.final_accuracy,
                "stall_accuracy": self.stall_accuracy, "blowup_factor": self.blowup_factor,
                "best_val_acc": self.best_val_acc if math.isfinite(self.best_val_acc) else None}


class ValidateAtMaxSteps(L.Callback):
    """A fit that ``max_steps`` stops mid-epoch ends validated: asking Lightning to stop at that
    step makes its own epoch loop run validation before leaving (the path early stopping
    takes), so result.json, the console and the checkpoints get ``val/acc``."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True


class Heartbeat(L.Callback):
    """``heartbeat.json`` in the run folder (rank 0): host, pid, start time and the last sign of
    life, refreshed at most every ``every_s`` seconds from training, validation and test
    batches. A run killed without a chance to write (SIGKILL, the OOM killer, a lost node)
    leaves no result.json: this file lets the report tell it from a run still going."""

    def __init__(self, output_dir: str | Path, every_s: float = 30.0):
        self.path = Path(output_dir) / "heartbeat.json"
        self.every_s = every_s
        self.record = {"host": socket.gethostname(), "pid": os.getpid(),
                       "start_time": _utc_now(), "heartbeat": None, "every_s": every_s}
        self._last = -math.inf

    def beat(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.every_s:
            self._last = now
            self.record["heartbeat"] = _utc_now()
            with contextlib.suppress(OSError):  # a full disk must not end the run here
                atomic_write(self.path, json.dumps(self.record, indent=2).encode())

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.is_global_zero:
            self.beat(force=True)

    def _batch(self, trainer, *args, **kwargs) -> None:
        if trainer.is_global_zero:
            self.beat()

    on_train_batch_end = on_validation_batch_end = on_test_batch_end = _batch


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
