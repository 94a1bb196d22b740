"""Monitors the lessons need beyond the default ones: training accuracy measured the way
validation is, how much the network relies on single hidden units, how far the weights moved
and whether units stayed clones, and the gradient noise scale."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.seed import isolate_rng

from initlab.monitors.callbacks import log_scalars
from initlab.monitors.stats import _BATCHNORM
from initlab.utils import atomic_write, weight_layers


def correct_count(model, x: torch.Tensor, y: torch.Tensor, chunk: int) -> torch.Tensor:
    """How many of ``x`` the model classifies right, ``chunk`` examples a forward, on the
    device (no host sync)."""
    return sum((model(x[start: start + chunk]).argmax(1) == y[start: start + chunk]).sum()
               for start in range(0, len(y), chunk))


def _accuracy(model, x: torch.Tensor, y: torch.Tensor, chunk: int) -> float:
    return int(correct_count(model, x, y, chunk)) / len(y)


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


def examples_on_device(trainer, pl_module, method: str, n: int | None,
                       monitor: L.Callback) -> tuple[torch.Tensor, torch.Tensor]:
    """``datamodule.<method>(n)`` (a fixed set of examples the monitor measures on), on the
    module's device; a data module without that method is named in the error."""
    datamodule = trainer.datamodule
    if datamodule is None or not hasattr(datamodule, method):
        raise ValueError(f"{type(monitor).__name__} needs a datamodule with {method}(n); got "
                         f"{type(datamodule).__name__}")
    x, y = getattr(datamodule, method)(n)
    return x.to(pl_module.device), y.to(pl_module.device)


# rows compared per torch.cdist call: (chunk x units) distances, small even for 1000 units
DISTINCT_CHUNK = 256


def count_distinct_rows(rows: torch.Tensor, tolerance: float) -> int:
    """Rows counted greedily: row i counts when every earlier row j < i differs from it by more
    than ``tolerance`` in max-abs difference (earlier rows count whether or not they were
    counted themselves). On the rows' device, ``DISTINCT_CHUNK`` rows at a time."""
    distinct = 0
    for start in range(0, len(rows), DISTINCT_CHUNK):
        chunk = rows[start: start + DISTINCT_CHUNK]
        end = start + len(chunk)
        dist = torch.cdist(chunk.unsqueeze(0), rows[:end].unsqueeze(0), p=float("inf"))[0]
        earlier = (torch.arange(end, device=rows.device).unsqueeze(0)
                   < torch.arange(start, end, device=rows.device).unsqueeze(1))
        distinct += int((~((dist <= tolerance) & earlier).any(1)).sum())
    return distinct


def unit_rows(layer: torch.nn.Module) -> torch.Tensor:
    """The layer's weight as (units, fan_in) rows, its bias appended as a last column."""
    rows = layer.weight.detach().reshape(layer.weight.shape[0], -1)
    if layer.bias is not None:
        rows = torch.cat([rows, layer.bias.detach().unsqueeze(1)], 1)
    return rows


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


class WeightSummary(L.Callback):
    """How far each Conv/Linear layer's weights moved, and whether its units stayed clones.

    At train start every weight is copied (on its device); at train end, on rank 0, writes
    ``weights.json`` into the run directory (``trainer.default_root_dir``, as
    ``init_stats.json``) and logs ``weights/<layer>/distinct_units``, ``near_zero_fraction``
    and ``change_rel`` (when defined) at the last global step. The copy is taken in
    ``on_train_start``, after Lightning has restored a checkpoint: a resumed run's ``change_*``
    measure this fit only, from the resumed weights, not from the initialisation.

    ``distinct_units``: rows of the weight reshaped to (units, -1), bias appended, counted by
    :func:`count_distinct_rows` with tolerance ``distinct_tolerance * max(1, max|W|)``.
    A non-finite number (diverged weights) is written as null.
    """

    def __init__(self, near_zero_threshold: float = 1e-3, distinct_tolerance: float = 1e-6):
        for key, value in (("near_zero_threshold", near_zero_threshold),
                           ("distinct_tolerance", distinct_tolerance)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"WeightSummary {key}={value!r} is invalid: it must be a "
                                 "number >= 0")
        self.near_zero_threshold = float(near_zero_threshold)
        self.distinct_tolerance = float(distinct_tolerance)
        self._start: dict[str, torch.Tensor] | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self._start = {name: m.weight.detach().clone()
                           for name, m in weight_layers(pl_module.model).items()}

    @torch.no_grad()
    def summarize(self, model: torch.nn.Module, start: dict[str, torch.Tensor]
                  ) -> dict[str, dict[str, float | int | None]]:
        """Per layer: the numbers of ``weights.json``'s ``layers``, the change from ``start``
        (weights by layer name)."""
        layers = {}
        for name, layer in weight_layers(model).items():
            w = layer.weight.detach()
            w64 = w.double()
            w_start = start[name].double()
            max_abs = float(w.abs().max())
            tolerance = self.distinct_tolerance * max(1.0, max_abs)
            start_l2 = float(w_start.norm())
            change_l2 = float((w64 - w_start).norm())
            layers[name] = {
                "units": w.shape[0],
                "distinct_units": count_distinct_rows(unit_rows(layer), tolerance),
                "near_zero_fraction": float((w.abs() < self.near_zero_threshold).double().mean()),
                "weight_l1": float(w64.abs().sum()),
                "weight_l2": float(w64.norm()),
                "change_l2": change_l2,
                "change_rel": change_l2 / start_l2 if start_l2 != 0 else None,
            }
            layers[name] = {k: _finite_or_none(v) if isinstance(v, float) else v
                            for k, v in layers[name].items()}
        return layers

    def on_train_end(self, trainer, pl_module) -> None:
        if self._start is None:
            return
        step = trainer.global_step
        layers = self.summarize(pl_module.model, self._start)
        summary = {"step": step, "near_zero_threshold": self.near_zero_threshold,
                   "distinct_tolerance": self.distinct_tolerance, "layers": layers}
        atomic_write(Path(trainer.default_root_dir) / "weights.json",
                     json.dumps(summary, indent=2).encode())
        scalars = {}
        for name, stats in layers.items():
            for key in ("distinct_units", "near_zero_fraction", "change_rel"):
                if stats[key] is not None:
                    scalars[f"weights/{name}/{key}"] = float(stats[key])
        log_scalars(trainer, scalars, step)


class _BatchNormStatsFrozen:
    """BatchNorm keeps normalising with batch statistics (train mode) but its running
    statistics are not updated: the monitor must not change what training sees next."""

    def __init__(self, model: torch.nn.Module):
        self.norms = [m for m in model.modules() if isinstance(m, _BATCHNORM)]

    def __enter__(self):
        self.tracking = [m.track_running_stats for m in self.norms]
        for m in self.norms:
            m.track_running_stats = False

    def __exit__(self, *exc):
        for m, track in zip(self.norms, self.tracking):
            m.track_running_stats = track


class GradientNoiseMonitor(L.Callback):
    """Gradient noise of the minibatch: the cosine between the step's gradient and the
    full-batch gradient of the mean cross-entropy on a fixed set, the first ``num_examples``
    training examples (all of them when the split is smaller; standardised, never augmented).

    Logs ``grad_noise/cosine``, ``grad_noise/minibatch_norm`` and ``grad_noise/full_norm`` at
    the global step being taken, on the steps where the examples seen (global_step x the
    current batch's size, per rank) cross a multiple of ``every_n_examples``; step 0 always.

    The step's gradient is ``p.grad`` of every trainable parameter, concatenated, read in
    ``on_before_optimizer_step``: after the backward, DDP's all-reduce and AMP's unscaling, and
    BEFORE Lightning clips (``Precision._after_closure`` calls this hook, then
    ``_clip_gradients``), so with ``gradient_clip_val`` set it is the unclipped gradient (norm
    clipping leaves the cosine unchanged). It is the gradient of the training loss, L1/L2
    penalties included when set; the full-batch one is of the cross-entropy alone.

    The full-batch gradient: forward/backward in chunks of ``chunk_size`` with
    ``torch.autograd.grad`` (``p.grad`` untouched, no graph kept), the model in its training
    mode (dropout on; BatchNorm normalising each chunk with the chunk's own statistics, its
    running statistics left as they were) under the trainer's precision context; the random
    state is restored after, so training draws the same dropout masks. Rank 0 only.
    """

    def __init__(self, num_examples: int = 4096, every_n_examples: int = 5000,
                 chunk_size: int = 1024):
        for key, value in (("num_examples", num_examples), ("every_n_examples", every_n_examples),
                           ("chunk_size", chunk_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GradientNoiseMonitor {key}={value!r} is invalid: it must be "
                                 "an integer >= 1")
        self.num_examples, self.every_n_examples = num_examples, every_n_examples
        self.chunk_size = chunk_size
        self._subset: tuple[torch.Tensor, torch.Tensor] | None = None
        self._batch_size = 0

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self._subset = examples_on_device(trainer, pl_module, "train_subset",
                                              self.num_examples, self)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch_size = len(batch[1])

    def due(self, step: int, batch_size: int) -> bool:
        """Whether the examples seen, step x batch_size, cross a multiple of every_n_examples
        at this step: one lies in ((step - 1) x batch_size, step x batch_size]."""
        every = self.every_n_examples
        return step == 0 or (step * batch_size) // every > ((step - 1) * batch_size) // every

    def full_batch_gradient(self, trainer, pl_module, params: list[torch.Tensor]
                            ) -> list[torch.Tensor]:
        x, y = self._subset
        total = [torch.zeros_like(p) for p in params]
        model = pl_module.model
        with isolate_rng(), _BatchNormStatsFrozen(model), \
                trainer.precision_plugin.forward_context():
            for start in range(0, len(y), self.chunk_size):
                xs, ys = x[start: start + self.chunk_size], y[start: start + self.chunk_size]
                # the chunk's share of the mean over the whole set
                loss = F.cross_entropy(model(xs).float(), ys, reduction="sum") / len(y)
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                for acc, g in zip(total, grads):
                    if g is not None:
                        acc.add_(g)
        return total

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        step = trainer.global_step
        if self._subset is None or not self.due(step, self._batch_size):
            return
        params = [p for p in pl_module.parameters() if p.requires_grad]
        minibatch = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p))
                               .detach().reshape(-1).double() for p in params])
        full = torch.cat([g.reshape(-1).double()
                          for g in self.full_batch_gradient(trainer, pl_module, params)])
        minibatch_norm, full_norm = minibatch.norm(), full.norm()
        cosine = (minibatch @ full) / (minibatch_norm * full_norm)
        values = torch.stack([cosine, minibatch_norm, full_norm]).tolist()  # one host transfer
        log_scalars(trainer, dict(zip(("grad_noise/cosine", "grad_noise/minibatch_norm",
                                       "grad_noise/full_norm"), values)), step)
