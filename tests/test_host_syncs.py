"""Host synchronisations per training step, counted on the CPU.

On CUDA every ``.item()``, ``float()``/``bool()``/``int()`` of a tensor, ``.tolist()``, ``.numpy()``
or ``.cpu()`` waits for the device. A TorchFunctionMode sees each of these calls on the CPU too,
so a step that would sync on a GPU is found here: only logging, check and progress steps (and an
epoch's last step) may have one.
"""

from __future__ import annotations

import sys

import lightning as L
import pytest
from torch.overrides import TorchFunctionMode

from initlab.progress import BarProgress, LineProgress
from initlab.train import build

SYNCS = frozenset({"item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__"})


class CountSyncs(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        # torch.optim's step counters live on the host (state["step"] is a CPU tensor unless
        # the optimizer is capturable or fused): reading them waits for no device
        if name in SYNCS and sys._getframe(1).f_globals.get("__name__") != "torch.optim.optimizer":
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


class SyncsPerStep(L.Callback):
    """The sync calls made from each training step's start to the next one's."""

    def __init__(self, mode: CountSyncs):
        self.mode, self.marks = mode, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.marks.append((trainer.global_step, batch_idx, len(self.mode.calls)))

    def per_step(self) -> dict[tuple[int, int], list[str]]:
        ends = [start for *_, start in self.marks[1:]] + [len(self.mode.calls)]
        return {(step, batch_idx): self.mode.calls[start:end]
                for (step, batch_idx, start), end in zip(self.marks, ends)}


@pytest.mark.parametrize("log_every, check_every, refresh", [(7, 5, 11), (10, 10, 10)])
def test_training_steps_sync_only_when_they_log_check_or_print(make_cfg, log_every, check_every,
                                                               refresh):
    cfg = make_cfg("trainer.max_epochs=2", "trainer.limit_val_batches=0",
                   f"trainer.log_every_n_steps={log_every}",
                   f"status.check_every_n_steps={check_every}",
                   "trainer.enable_progress_bar=true", f"progress_bar.refresh_rate={refresh}",
                   "data.batch_size=8", "data.train_samples=240")
    datamodule, module, trainer = build(cfg)
    mode = CountSyncs()
    marks = SyncsPerStep(mode)
    trainer.callbacks.append(marks)
    with mode:
        trainer.fit(module, datamodule=datamodule)
    batches = 240 // 8
    per_step = marks.per_step()
    assert len(per_step) == 2 * batches
    allowed = set()
    for step, batch_idx in per_step:
        done = step + 1  # the optimizer steps taken once this batch has trained
        # RunStatus reads gradient norms before the optimizer step of global step k*check and
        # its loss verdict after the batch that brings global_step to k*check
        checked = step % check_every == 0 or done % check_every == 0
        if (done % log_every == 0 or checked or (batch_idx + 1) % refresh == 0
                or batch_idx == batches - 1 or step == 0):
            allowed.add((step, batch_idx))
    unexpected = {key: calls for key, calls in per_step.items() if calls and key not in allowed}
    assert not unexpected, f"host syncs on steps that neither log, check nor print: {unexpected}"
    # a blind counter would pass too: the logging and check steps must be seen syncing
    assert any(per_step[key] for key in allowed if key[0] > 0)


def test_both_progress_bars_still_show_the_last_logged_loss(make_cfg):
    cfg = make_cfg("trainer.max_steps=6", "trainer.log_every_n_steps=3", "test=false")
    datamodule, module, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    logged = float(trainer.callback_metrics["train/ce"])
    for bar in (BarProgress(refresh_rate=3), LineProgress(every_n_steps=3)):
        assert bar.get_metrics(trainer, module)["train/ce"] == logged
