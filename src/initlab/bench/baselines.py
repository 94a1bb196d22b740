"""What initlab is measured against: a hand-written training loop, and the least a
LightningModule does (to tell what Lightning adds from what initlab adds)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from initlab.bench.timing import sync
from initlab.data.mnist import MEAN, STD
from initlab.data.splits import example_order
from initlab.module import NVML_CUDA_CHECK
from initlab.train import channels_last_in_effect


@contextlib.contextmanager
def as_plain_torch():
    """The environment a script that imports torch alone runs in: Lightning's import sets
    ``PYTORCH_NVML_BASED_CUDA_CHECK``, and with it each Adam step tries to load NVML where CUDA
    is absent (0.09 ms a step of the default CNN on the 2-core CPU, ~1% of it). A raw loop
    paired with a fit ran in whatever the fit left set (initlab's fits unset it, a minimal
    LightningModule's keep it), so the baseline itself changed with the variant."""
    saved = os.environ.pop(NVML_CUDA_CHECK, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[NVML_CUDA_CHECK] = saved


class RawSteps:
    """The hand-written baseline, resumable: slice, scale, forward, backward, step (and the LR
    schedule's step, if given). Each call trains the next ``steps`` batches, in the data
    module's order for the run ``seed`` (:func:`~initlab.data.splits.example_order`), in a
    plain torch process's environment (:func:`as_plain_torch`). Returns the seconds it took."""

    def __init__(self, model: torch.nn.Module, optimizer, images, labels, batch_size: int,
                 seed: int, scheduler=None):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.images, self.labels = images, labels
        self.batch_size, self.seed = batch_size, seed
        self.per_epoch = -(-len(labels) // batch_size)
        self.done = 0
        self._epoch, self._batches = -1, []

    def batch_indices(self, step: int) -> torch.Tensor:
        """The examples of training step ``step`` (counted from 0 over all epochs)."""
        epoch = step // self.per_epoch
        if epoch != self._epoch:
            order = example_order(len(self.labels), self.seed, epoch)
            self._epoch, self._batches = epoch, order.to(self.images.device).split(self.batch_size)
        return self._batches[step % self.per_epoch]

    def __call__(self, steps: int) -> float:
        with as_plain_torch():
            return self._train(steps)

    def _train(self, steps: int) -> float:
        self.model.train()
        sync(self.images.device)
        start = time.perf_counter()
        for _ in range(steps):
            idx = self.batch_indices(self.done)
            self.done += 1
            x = (self.images[idx].unsqueeze(1).float().div_(255) - MEAN) / STD
            loss = F.cross_entropy(self.model(x), self.labels[idx])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
        sync(self.images.device)
        return time.perf_counter() - start


class MinimalModule(L.LightningModule):
    """The least a LightningModule does: forward, cross-entropy, the optimizer. Trained by
    Lightning's loop like initlab's, it measures what Lightning itself adds to a raw loop."""

    def __init__(self, model: torch.nn.Module, optimizer: Callable):
        super().__init__()
        self.model, self.optimizer_factory = model, optimizer

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.model(x), y)

    def configure_optimizers(self):
        return self.optimizer_factory(self.model.parameters())


def build_minimal(cfg, callbacks: list[L.Callback],
                  barebones: bool = False) -> tuple[L.LightningModule, L.Trainer]:
    """:class:`MinimalModule` with the model and optimizer of ``cfg``, in the memory format
    initlab trains it in, on a Trainer of the same trainer settings, without initlab's
    callbacks, logger or checkpoints; ``barebones``: in
    Lightning's barebones mode (no logging machinery, progress bar, model summary or profiler:
    Lightning's loop with what may slow it turned off)."""
    torch.manual_seed(cfg.seed)
    module = MinimalModule(instantiate(cfg.model), instantiate(cfg.optim))
    bare = {"barebones": True, "enable_progress_bar": False, "enable_model_summary": False,
            "log_every_n_steps": 0, "num_sanity_val_steps": 0} if barebones else {}
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=False,
                          enable_checkpointing=False, default_root_dir=str(cfg.output_dir), **bare)
    # the memory format initlab's build puts the model in (channels-last for the CNN on the CPU:
    # ~0.7x the step), so both modules train the same steps and only the framework differs
    if channels_last_in_effect(cfg.channels_last, module.model, trainer.strategy.root_device):
        module.model.to(memory_format=torch.channels_last)
    return module, trainer
