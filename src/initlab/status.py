"""A run's outcome as science: ok, diverged (loss not finite) or stalled (stays at chance); or
interrupted (Ctrl-C, SIGTERM)."""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from initlab.monitors.stats import weight_layers

BLOWUP_NORM = 1e6  # a weight-gradient norm above this counts as blown up


class RunStatus(L.Callback):
    """Watches every step on the device and looks at the host only every ``check_every_n_steps``:
    a non-finite loss stops training and marks the run ``diverged``, naming the step and the
    layer whose gradient norm blew up (non-finite or > 1e6) first. A run whose best validation
    accuracy stays below ``stall_accuracy`` is ``stalled``."""

    def __init__(self, check_every_n_steps: int = 10, stall_accuracy: float = 0.2):
        self.check_every_n_steps = check_every_n_steps
        self.stall_accuracy = stall_accuracy
        self.status = "ok"
        self.diverged_step: int | None = None
        self.diverged_layer: str | None = None
        self.best_val_acc = -math.inf
        self.exit_code = 0
        self._names: list[str] = []
        self._first_blowup: torch.Tensor | None = None  # per layer, step of first blow-up or -1
        self._loss_ok: torch.Tensor | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self._layers = weight_layers(pl_module.model)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        layers = self._layers
        grads = [m.weight.grad for m in layers.values()]
        if any(g is None for g in grads):
            return
        norms = torch.stack(torch._foreach_norm(grads))
        if self._first_blowup is None:
            self._names = list(layers)
            self._first_blowup = torch.full_like(norms, -1)
        blown = ~torch.isfinite(norms) | (norms > BLOWUP_NORM)
        self._first_blowup = torch.where(blown & (self._first_blowup < 0),
                                         torch.full_like(norms, trainer.global_step),
                                         self._first_blowup)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        ok = torch.isfinite(loss.detach())
        self._loss_ok = ok if self._loss_ok is None else self._loss_ok & ok
        if trainer.global_step % self.check_every_n_steps == 0:
            self._check(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._check(trainer)
        if self.status == "ok" and self.best_val_acc < self.stall_accuracy:
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
        if self.status == "diverged" or self._loss_ok is None:
            return
        # every rank takes the same decision (a collective only on check steps)
        if not trainer.strategy.reduce_boolean_decision(not bool(self._loss_ok), all=False):
            return
        self.status = "diverged"
        trainer.should_stop = True
        steps = self._first_blowup.tolist() if self._first_blowup is not None else []
        blown = [(s, n) for s, n in zip(steps, self._names) if s >= 0]
        if blown:
            step, self.diverged_layer = min(blown, key=lambda b: b[0])  # ties: input side
            self.diverged_step = int(step)
        else:
            self.diverged_step = trainer.global_step

    def summary(self) -> dict:
        return {"status": self.status, "diverged_step": self.diverged_step,
                "diverged_layer": self.diverged_layer,
                "best_val_acc": self.best_val_acc if math.isfinite(self.best_val_acc) else None}
