"""Test error against updates during training (Glorot & Bengio's Fig. 11)."""

from __future__ import annotations

import lightning as L
import torch

from initlab.monitors.callbacks import log_scalars
from initlab.monitors.evaluation import correct_count, examples_on_device


class TestErrorCurve(L.Callback):
    """``test_curve/error`` (percent) at every validation of a fit (not the sanity check):
    the error on the first ``num_examples`` test examples (all when null), never corrupted, in
    evaluation mode, at the validation's global step. Rank 0 only; one host transfer a point.
    The final ``test/acc`` stays the run's result: this is the curve that leads to it."""

    __test__ = False  # a monitor, not a test class for pytest to collect

    def __init__(self, num_examples: int | None = None, chunk_size: int = 1000):
        for key, value in (("num_examples", num_examples), ("chunk_size", chunk_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"TestErrorCurve {key}={value!r} is invalid: it must be an integer "
                                 ">= 1" + (" or null (the whole test set)"
                                           if key == "num_examples" else ""))
        self.num_examples, self.chunk_size = num_examples, chunk_size
        self._test: tuple[torch.Tensor, torch.Tensor] | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self._test = examples_on_device(trainer, pl_module, "test_examples",
                                            self.num_examples, self)

    @torch.no_grad()
    def error(self, model: torch.nn.Module) -> torch.Tensor:
        """Percent of the test examples ``model`` (in its current mode) gets wrong, on the
        device."""
        x, y = self._test
        return 100.0 * (len(y) - correct_count(model, x, y, self.chunk_size)) / len(y)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self._test is None or trainer.sanity_checking:
            return
        # validation already runs in evaluation mode (dropout off, BatchNorm's running stats)
        log_scalars(trainer, {"test_curve/error": float(self.error(pl_module.model))},
                    trainer.global_step)
