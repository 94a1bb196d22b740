"""A run's outcome as science: ok, diverged (loss not finite) or stalled (stays at chance); or
interrupted (Ctrl-C, SIGTERM)."""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from initlab.utils import weight_layers

BLOWUP_NORM = 1e6  # a weight-gradient norm above this counts as blown up
NONE_BAD = 2**62  # "no non-finite loss yet", as a step index on the device


class RunStatus(L.Callback):
    """Marks a run ``diverged`` when its loss stops being finite, and stops it; ``stalled`` when
    its best validation accuracy stays below ``stall_accuracy``; ``interrupted`` on Ctrl-C or
    SIGTERM.

    A step costs no device op: its loss tensor is kept; at most every ``FOLD`` steps the kept
    losses fold, on the device, into the first step whose loss was not finite, and the host
    reads that, and each layer's weight-gradient norm, every ``check_every_n_steps`` steps and
    at the end. A diverged run records ``diverged_step`` (the first step whose loss was not
    finite, exact at any cadence), ``diverged_layer`` (the input-most layer whose
    weight-gradient norm was first seen non-finite or above 1e6) and ``blowup_step`` (the step
    at which that was seen: checked steps, and the step it stopped).
    """

    def __init__(self, check_every_n_steps: int = 50, stall_accuracy: float = 0.2):
        self.check_every_n_steps = check_every_n_steps
        self.stall_accuracy = stall_accuracy
        self.status = "ok"
        self.diverged_step: int | None = None
        self.diverged_layer: str | None = None
        self.blowup_step: int | None = None
        self.best_val_acc = -math.inf
        self.exit_code = 0
        self._first_blowup: dict[str, int] = {}
        self._losses: list[torch.Tensor] = []  # the losses of the steps since the last fold
        self._loss_steps: list[int] = []  # their step indices
        self._first_bad: torch.Tensor | None = None  # first step with a non-finite loss, or NONE_BAD

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
        bad = ~torch.isfinite(torch.stack(self._losses))
        steps = torch.tensor(self._loss_steps).to(bad.device, non_blocking=True)
        first = torch.where(bad, steps, NONE_BAD).min()
        self._first_bad = first if self._first_bad is None else torch.minimum(self._first_bad, first)
        self._losses, self._loss_steps = [], []

    def on_train_end(self, trainer, pl_module) -> None:
        self._check(trainer)
        # no validation ran (max_steps inside the first epoch): nothing to call stalled
        if self.status == "ok" and -math.inf < self.best_val_acc < self.stall_accuracy:
            self.status = "stalled"

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.status = "interrupted"
            self.exit_code = 130  # the shell's code for SIGINT
        elif isinstance(exception, SIGTERMException):
            self.status = "interrupted"
            self.exit_code = 143  # SIGTERM: tells a scheduler the job did not finish

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        acc = trainer.callback_metrics.get("val/acc")
        if acc is not None and not trainer.sanity_checking:
            self.best_val_acc = max(self.best_val_acc, float(acc))

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
        if not self._first_blowup:  # not seen on a checked step: the last batch's gradients
            self._record_blowups(trainer.global_step - 1)
        if self._first_blowup:  # dicts keep insertion order: ties go to the input side
            self.diverged_layer = min(self._first_blowup, key=self._first_blowup.get)
            self.blowup_step = self._first_blowup[self.diverged_layer]

    def state_dict(self) -> dict:
        """Saved in checkpoints: a resumed run keeps its best accuracy and its verdicts."""
        return {"status": self.status, "diverged_step": self.diverged_step,
                "diverged_layer": self.diverged_layer, "blowup_step": self.blowup_step,
                "best_val_acc": self.best_val_acc, "first_blowup": dict(self._first_blowup)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.status = state_dict["status"] if state_dict["status"] != "interrupted" else "ok"
        self.diverged_step = state_dict["diverged_step"]
        self.diverged_layer = state_dict["diverged_layer"]
        self.blowup_step = state_dict["blowup_step"]
        self.best_val_acc = state_dict["best_val_acc"]
        self._first_blowup = dict(state_dict["first_blowup"])

    def summary(self) -> dict:
        return {"status": self.status, "diverged_step": self.diverged_step,
                "diverged_layer": self.diverged_layer, "blowup_step": self.blowup_step,
                "best_val_acc": self.best_val_acc if math.isfinite(self.best_val_acc) else None}
