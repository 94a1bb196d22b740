"""The LightningModule: loss with explicit L1/L2 penalties, accuracy, optimizer wiring."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from initlab.models.contract import check_model_contract
from initlab.utils import DROPOUT, stream_seed, weight_layers


def build_scheduler(scheduler: Callable, optimizer: torch.optim.Optimizer, total_steps: int):
    """Complete a partial LR scheduler with what only the run knows (peak LR, step count).

    Only the learning rate is scheduled unless the config says otherwise: torch's OneCycleLR
    cycles momentum (or Adam's beta1) by default, overwriting what the optimizer was given, so
    the scheduler configs set ``cycle_momentum: false`` and ``true`` must be asked for.
    """
    func = scheduler.func if hasattr(scheduler, "func") else scheduler
    params = inspect.signature(func).parameters
    extra = {}
    if "max_lr" in params:
        extra["max_lr"] = [group["lr"] for group in optimizer.param_groups]
    if "total_steps" in params:
        extra["total_steps"] = total_steps
    if "T_max" in params:
        extra["T_max"] = total_steps
    given = getattr(scheduler, "keywords", {})
    if "cycle_momentum" in params and given.get("cycle_momentum") is not False:
        defaults = optimizer.defaults
        if "momentum" not in defaults and "betas" not in defaults:
            raise ValueError(
                f"scheduler.cycle_momentum=true needs an optimizer with momentum or betas; "
                f"{type(optimizer).__name__} has neither: set scheduler.cycle_momentum=false")
        if "cycle_momentum" not in given:
            extra["cycle_momentum"] = False  # never torch's silent default
    return scheduler(optimizer, **extra)


# Lightning's import sets this (a CUDA check that cannot poison a fork). Where CUDA is absent,
# each torch.cuda.is_available() then tries to load NVML (~45 us), and every optimizer step
# asks (its graph-capture check): a CPU fit there runs with torch's direct check, which costs
# nothing and initialises nothing without a GPU.
NVML_CUDA_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


class Classifier(L.LightningModule):
    def __init__(self, model: nn.Module, optimizer: Callable, scheduler: Callable | None = None,
                 l1: float = 0.0, l2: float = 0.0, num_classes: int = 10, compile: bool = False,
                 seed: int = 0):
        super().__init__()
        for name, value in (("l1", l1), ("l2", l2)):
            if value < 0:
                raise ValueError(f"{name}={value!r} is invalid: penalty coefficients must be >= 0")
        self.model = model
        # Training and evaluation go through the compiled graph; monitors probe the eager model.
        # Bound methods, not modules, so the weights are registered (and saved) once.
        self.net = torch.compile(model.forward) if compile else model.__call__
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.l1, self.l2, self.seed = l1, l2, seed
        # Conv/Linear weights, the same tensors every step: biases and norms are not penalised
        self._penalized = [m.weight for m in weight_layers(model).values()]
        self._epoch_sums: tuple[torch.Tensor, torch.Tensor] | None = None  # correct, loss x n
        self._epoch_examples = 0
        self._pending_cuda_rng: torch.Tensor | None = None  # from a checkpoint, set at fit start
        self._nvml_cuda_check: str | None = None  # set aside for the fit, restored after it
        self.channels_last = False  # the memory format in effect: train.build decides it
        self.num_classes = num_classes
        # per evaluated set: correct, summed loss, examples (float64, on the device)
        self._eval_sums: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        loss = ce = F.cross_entropy(logits, y)
        step_metrics = {}
        if self.l1:
            l1 = self.l1 * sum(w.abs().sum() for w in self._penalized)
            step_metrics["train/l1"] = l1
            loss = loss + l1
        if self.l2:
            l2 = self.l2 * sum(w.pow(2).sum() for w in self._penalized)
            step_metrics["train/l2"] = l2
            loss = loss + l2
        correct = logits.detach().argmax(1) == y
        # Epoch sums accumulate on the device, two in-place adds a step (a torchmetrics update
        # costs ~0.15 ms of Python, ~1% of a CPU step); step values reach Lightning only on
        # its logging steps, since each self.log call costs more than a small model's step.
        if self._epoch_sums is None:  # here, not at epoch start: a mid-epoch resume skips it
            self._epoch_sums = tuple(torch.zeros((), dtype=torch.float64, device=loss.device)
                                     for _ in range(2))
        correct_sum, loss_sum = self._epoch_sums
        correct_sum.add_(correct.sum())
        loss_sum.add_(loss.detach(), alpha=len(y))
        self._epoch_examples += len(y)
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            self.log("train/ce", ce)  # the progress bars read it when they draw (progress.py)
            self.log_dict({**step_metrics, "train/loss": loss, "train/acc": correct.float().mean()})
        return loss

    def on_train_epoch_start(self) -> None:
        self._epoch_sums, self._epoch_examples = None, 0

    def on_train_epoch_end(self) -> None:
        """The epoch's accuracy and loss per example (every rank's batches: summed, then
        divided), over the batches this process trained (after a mid-epoch resume: since it)."""
        if self._epoch_sums is None:
            return
        correct_sum, loss_sum = self._epoch_sums
        sums = torch.stack([correct_sum, loss_sum, torch.full_like(loss_sum, self._epoch_examples)])
        correct, loss, examples = self.trainer.strategy.reduce(sums, reduce_op="sum").tolist()
        # already equal on every rank: sync_dist averages equal values (and tells Lightning so)
        self.log("train/acc_epoch", correct / examples, sync_dist=True)
        self.log("train/loss_epoch", loss / examples, sync_dist=True)

    def _evaluate(self, batch, batch_idx: int, name: str, dataloader_idx: int = 0,
                  with_loss: bool = True) -> None:
        """Adds the batch to the pass's sums for the set ``name`` (on the device); at the
        set's last batch logs ``<name>/acc`` (and ``<name>/loss``) over the whole pass and
        every rank: exact counts and summed losses, divided once. One log call a pass, not two
        a batch (~0.9 ms each under cProfile: 0.07 s of a 0.3 s CPU pass of the test set)."""
        x, y = batch
        logits = self.net(x)
        if batch_idx == 0 or name not in self._eval_sums:
            self._eval_sums[name] = torch.zeros(3, dtype=torch.float64, device=logits.device)
        sums = self._eval_sums[name]
        sums[0] += (logits.argmax(1) == y).sum()
        if with_loss:
            sums[1] += F.cross_entropy(logits, y, reduction="sum")
        sums[2] += len(y)
        trainer = self.trainer
        if trainer.sanity_checking:
            batches = trainer.num_sanity_val_batches
        else:
            batches = trainer.num_test_batches if trainer.testing else trainer.num_val_batches
        if batch_idx + 1 < batches[dataloader_idx]:
            return
        correct, loss, examples = trainer.strategy.reduce(sums, reduce_op="sum").tolist()
        del self._eval_sums[name]
        # names users see carry no /dataloader_idx_N suffix, however many test sets there are;
        # already equal on every rank: sync_dist averages equal values (and tells Lightning so)
        self.log(f"{name}/acc", correct / examples, prog_bar=name == "val", sync_dist=True,
                 add_dataloader_idx=False)
        if with_loss:
            self.log(f"{name}/loss", loss / examples, sync_dist=True, add_dataloader_idx=False)

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._evaluate(batch, batch_idx, "val", dataloader_idx)

    def on_test_start(self) -> None:
        """Name the test sets: a dict of test dataloaders logs each under its key ("test" is the
        clean set: test/acc, test/loss; any other key: <key>/acc); a single loader is "test"."""
        loaders = self.trainer.test_dataloaders
        if isinstance(loaders, Mapping):
            self._test_sets = list(loaders)
        elif isinstance(loaders, (list, tuple)) and len(loaders) > 1:
            raise ValueError(f"{len(loaders)} unnamed test dataloaders: return a dict "
                             "{name: dataloader} ('test' = the clean test set)")
        else:
            self._test_sets = ["test"]

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        name = self._test_sets[dataloader_idx]
        # the corrupted sets report accuracy only
        self._evaluate(batch, batch_idx, name, dataloader_idx, with_loss=name == "test")

    def setup(self, stage: str) -> None:
        # before any callback's on_fit_start: the monitors read the model through the contract
        check_model_contract(self.model)

    def on_fit_start(self) -> None:
        # seed_everything gave every DDP rank the same stream: give each rank its own dropout
        # masks (a resumed run restores them from the checkpoint instead)
        if self.trainer.world_size > 1 and self.trainer.ckpt_path is None:
            torch.manual_seed(stream_seed(self.seed, DROPOUT, self.trainer.global_rank))
        self._restore_cuda_rng()
        if self.device.type == "cpu" and not torch.cuda.is_available():
            self._nvml_cuda_check = os.environ.pop(NVML_CUDA_CHECK, None)

    def teardown(self, stage: str) -> None:
        if self._nvml_cuda_check is not None:
            os.environ[NVML_CUDA_CHECK] = self._nvml_cuda_check
            self._nvml_cuda_check = None

    def _rng_state(self) -> dict[str, torch.Tensor]:
        state = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Dropout masks and other draws continue exactly after a resume, on every rank (this
        # hook runs on every rank; rank 0 writes the file).
        state = self._rng_state()
        if self.trainer.world_size > 1:
            state = {k: self.all_gather(v.to(self.device)).cpu() for k, v in state.items()}
            checkpoint["rng_states_per_rank"] = state
        else:
            checkpoint["rng_states"] = state

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "rng_states_per_rank" in checkpoint:
            rank = self.trainer.global_rank if self._trainer is not None else 0
            states = {k: v[rank] for k, v in checkpoint["rng_states_per_rank"].items()}
        else:
            states = checkpoint.get("rng_states", {})
        if "torch" in states:
            torch.set_rng_state(states["torch"])
        # Lightning restores a checkpoint before it moves the model to its device: the CUDA
        # generator is set in on_fit_start, once self.device names the run's GPU
        self._pending_cuda_rng = states.get("cuda")

    def _restore_cuda_rng(self) -> None:
        state, self._pending_cuda_rng = self._pending_cuda_rng, None
        if state is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state, self.device)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.model.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = build_scheduler(
            self.scheduler_factory, optimizer, int(self.trainer.estimated_stepping_batches)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
