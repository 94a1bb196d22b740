"""Evaluations the lessons need beyond validation: training accuracy measured the way
validation is, and how much the network relies on single hidden units."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch

from initlab.monitors.callbacks import log_scalars
from initlab.utils import atomic_write


def _accuracy(model, x: torch.Tensor, y: torch.Tensor, chunk: int) -> float:
    correct = 0
    for start in range(0, len(y), chunk):
        logits = model(x[start: start + chunk])
        correct += int((logits.argmax(1) == y[start: start + chunk]).sum())
    return correct / len(y)


class TrainSubsetAccuracy(L.Callback):
    """``train_eval/acc`` at every validation of a fit (not the sanity check): accuracy on the
    first ``num_examples`` training examples (never augmented), in evaluation mode, at the
    validation's step. Against ``val/acc`` it is a like-for-like generalisation gap, which
    ``train/acc_epoch`` (a running mean over the epoch, dropout and augmentation on) is not."""

    def __init__(self, num_examples: int = 2000, chunk_size: int = 1000):
        self.num_examples, self.chunk_size = num_examples, chunk_size
        self._subset: tuple[torch.Tensor, torch.Tensor] | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            x, y = trainer.datamodule.train_subset(self.num_examples)
            self._subset = (x.to(pl_module.device), y.to(pl_module.device))

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self._subset is None or trainer.sanity_checking:
            return
        with torch.no_grad():  # validation already runs in eval mode
            acc = _accuracy(pl_module.model, *self._subset, self.chunk_size)
        log_scalars(trainer, {"train_eval/acc": acc}, trainer.global_step)


class UnitAblation(L.Callback):
    """At the end of training, on the first ``num_examples`` validation examples: the accuracy
    lost when one unit of the last hidden layer (the input of the model's ``output_layer``) is
    set to 0, for every unit, and when the ``top_k`` most important units are removed together.
    Writes ``ablation.json`` into the run directory. Dropout's claim that the network does not
    rely on any one unit is the size of the largest single-unit drop."""

    def __init__(self, num_examples: int = 5000, top_k: int = 10):
        self.num_examples, self.top_k = num_examples, top_k

    @torch.no_grad()
    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        model = pl_module.model
        x, y = trainer.datamodule.probe_batch(self.num_examples)
        x, y = x.to(pl_module.device), y.to(pl_module.device)
        seen: list[torch.Tensor] = []
        hook = model.output_layer.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
        was_training = model.training
        model.eval()
        try:
            logits = torch.cat([model(x[i: i + 1000]) for i in range(0, len(y), 1000)])
        finally:
            hook.remove()
            model.train(was_training)
        hidden = torch.cat(seen)  # (examples, units)
        weight = model.output_layer.weight  # (classes, units)
        base = (logits.argmax(1) == y).float().mean()
        # logits without unit j: subtract its contribution h_j * W[:, j], all units at once
        without = logits.unsqueeze(1) - hidden.unsqueeze(2) * weight.t().unsqueeze(0)
        acc = (without.argmax(2) == y.unsqueeze(1)).float().mean(0)  # (units,)
        drops = (base - acc) * 100
        top = torch.argsort(drops, descending=True)[: self.top_k]
        joint = logits - hidden[:, top] @ weight[:, top].t()
        joint_acc = (joint.argmax(1) == y).float().mean()
        record = {"examples": len(y), "units": hidden.shape[1], "base_acc": float(base),
                  "drop_points": [round(float(d), 4) for d in drops],
                  "max_drop_points": float(drops.max()), "max_unit": int(drops.argmax()),
                  "mean_drop_points": float(drops.mean()),
                  "silent_units": int((hidden.abs().amax(0) == 0).sum()),
                  "top_k": len(top), "top_k_drop_points": float((base - joint_acc) * 100)}
        atomic_write(Path(trainer.default_root_dir) / "ablation.json",
                     json.dumps(record, indent=2).encode())
