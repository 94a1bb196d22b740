"""Progress: tqdm bars on a terminal; plain periodic lines when stdout is a file or a pipe
(tqdm's carriage returns would make one ever-growing line of a log file)."""

from __future__ import annotations

import sys
import time

from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

from initlab.console import say


def with_train_loss(trainer, items: dict) -> dict:
    """The last logged ``train/ce``, read from the device only when a bar draws: logged with
    ``prog_bar=True`` Lightning would convert it to a float after every batch (a host sync a
    step on CUDA, the logged value being cached until the next logging step)."""
    ce = trainer.callback_metrics.get("train/ce")
    return items if ce is None else {**items, "train/ce": float(ce)}


class LineProgress(ProgressBar):
    """One line every ``every_n_steps`` training steps and one per validation/test pass."""

    def __init__(self, every_n_steps: int = 50):
        super().__init__()
        self.every_n_steps = every_n_steps
        self._enabled = True
        self._start = time.perf_counter()

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def get_metrics(self, trainer, pl_module) -> dict:
        return with_train_loss(trainer, super().get_metrics(trainer, pl_module))

    def _metrics(self, trainer, pl_module) -> str:
        items = self.get_metrics(trainer, pl_module)
        return "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in items.items())

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._enabled or (batch_idx + 1) % self.every_n_steps:
            return
        # the epoch's batches: Lightning's total_train_batches is the steps left to max_steps
        # when max_epochs is -1, a total that shrinks as the epoch runs
        steps = f"/{trainer.max_steps}" if trainer.max_steps > 0 else ""
        self.print(f"epoch {trainer.current_epoch}  batch {batch_idx + 1}/"
                   f"{trainer.num_training_batches}  step {trainer.global_step}{steps}  "
                   f"{time.perf_counter() - self._start:.1f} s  {self._metrics(trainer, pl_module)}")

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._enabled and not trainer.sanity_checking:
            self.print(f"validation at step {trainer.global_step}: "
                       f"{self._metrics(trainer, pl_module)}")

    def print(self, *args, **kwargs) -> None:
        say(" ".join(str(a) for a in args))  # train.log too, where a Hydra job logs


class BarProgress(TQDMProgressBar):
    def get_metrics(self, trainer, pl_module) -> dict:
        return with_train_loss(trainer, super().get_metrics(trainer, pl_module))


def progress_bar(refresh_rate: int = 50) -> ProgressBar:
    """tqdm on a terminal, plain lines otherwise, both every ``refresh_rate`` steps."""
    if sys.stdout.isatty():
        return BarProgress(refresh_rate=refresh_rate)
    return LineProgress(every_n_steps=refresh_rate)
