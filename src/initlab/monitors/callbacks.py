"""Lightning callbacks that log the per-layer statistics to every attached logger.

Nothing here runs on steps that do not log: the probe and the update ratio attach their work
only on their own steps, and gradient norms stay on the device until a logging step.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.seed import isolate_rng

from initlab.init import fans
from initlab.monitors.stats import (
    _BATCHNORM,
    HISTOGRAM_BINS,
    JacobianConfig,
    Probe,
    histogram,
    probe,
)
from initlab.timing import ValidationClock
from initlab.utils import atomic_write, weight_layers

# stats.py key -> TensorBoard tag ({} = the layer's module name)
TAGS = {
    "activation_mean": "activation/{}/mean",
    "activation_std": "activation/{}/std",
    "activation_p98": "activation/{}/p98",
    "activation_saturated": "activation/{}/saturated",
    "preactivation_std": "preactivation/{}/std",
    "backprop_std": "backprop/{}/std",
    "weight_grad_std": "weight_grad/{}/std",
    "jacobian_mean_sv": "jacobian/{}/mean_sv",
    "jacobian_mean_sv_stderr": "jacobian/{}/mean_sv_stderr",
    "jacobian_rms_sv": "jacobian/{}/rms_sv",
    "fan_in_var": "weights/{}/fan_in_var",
    "fan_out_var": "weights/{}/fan_out_var",
}


LAYOUT_CHARTS = {
    "training": {
        "accuracy: train vs validation": ["train/acc_epoch", "val/acc"],
        "loss: train vs validation": ["train/loss_epoch", "val/loss"],
        "test accuracy under corruption": ["test_corrupt/.*"],
    },
    "per layer": {
        "activation mean": ["activation/.*/mean"], "activation std": ["activation/.*/std"],
        "activation 98th percentile": ["activation/.*/p98"],
        "saturated (dead for ReLU) fraction": ["activation/.*/saturated"],
        "pre-activation std": ["preactivation/.*/std"],
        "back-propagated gradient std dC/ds": ["backprop/.*/std"],
        "weight gradient std": ["weight_grad/.*/std"],
        "Jacobian mean singular value": ["jacobian/.*/mean_sv$"],
        "Jacobian RMS singular value": ["jacobian/.*/rms_sv"],
        "fan_in Var(W)": ["weights/.*/fan_in_var"], "fan_out Var(W)": ["weights/.*/fan_out_var"],
        "update ratio log10": ["update_ratio/.*"], "weight gradient L2 norm": ["grad_norm/.*"],
    },
}


# what fills a chart, where it is not always there; the other "per layer" charts: the probe
CHART_SOURCES = {
    "test accuracy under corruption": "corruptions",
    "Jacobian mean singular value": "jacobian", "Jacobian RMS singular value": "jacobian",
    "update ratio log10": "update_ratio", "weight gradient L2 norm": "grad_norm",
}


def add_layout(logger: TensorBoardLogger, callbacks=(), corruptions: bool = False) -> None:
    """TensorBoard custom-scalars layout: one chart per statistic, all layers overlaid (the
    paper's figures), and train vs validation on one chart (the generalisation gap). Charts
    nothing will fill are left out: the corruption chart without corrupted test sets, a
    monitor's charts without that monitor among ``callbacks``."""
    probe = next((c for c in callbacks if isinstance(c, ProbeMonitor)), None)
    present = {"corruptions": corruptions, "probe": probe is not None,
               "jacobian": probe is not None and probe.jacobian is not None,
               "update_ratio": any(isinstance(c, UpdateRatioMonitor) for c in callbacks),
               "grad_norm": any(isinstance(c, GradNormMonitor) for c in callbacks)}
    layout = {}
    for category, charts in LAYOUT_CHARTS.items():
        default = "probe" if category == "per layer" else None
        kept = {title: ["Multiline", tags] for title, tags in charts.items()
                if (source := CHART_SOURCES.get(title, default)) is None or present[source]}
        if kept:
            layout[category] = kept
    logger.experiment.add_custom_scalars(layout)


def write_histogram(writer, tag: str, packed: list[float], step: int) -> bool:
    """One :func:`initlab.monitors.stats.histogram` (moved to the host) as a TensorBoard raw
    histogram: its uniform bins, right edges as bucket limits. An empty one (no finite value)
    is skipped: returns False."""
    lo, hi, num, total, squares, *counts = packed
    if num == 0:
        return False
    span = hi - lo if hi > lo else 1.0
    limits = [lo + span * (i + 1) / len(counts) for i in range(len(counts))]
    writer.add_histogram_raw(tag, min=lo, max=hi, num=int(num), sum=total, sum_squares=squares,
                             bucket_limits=limits, bucket_counts=counts, global_step=step)
    return True


def log_scalars(trainer: L.Trainer, metrics: dict[str, float], step: int) -> None:
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=step)


def _due(step: int, every: int | None) -> bool:
    return bool(every) and step % every == 0


class GradNormMonitor(L.Callback):
    """``grad_norm/<layer>`` (L2 norm of each Conv/Linear weight gradient) and
    ``grad_norm/total``, after DDP's gradient all-reduce. Norms of every ``every_n_steps``-th
    step are summed on the device (one fused ``_foreach_norm``) and their mean since the last
    logging step is logged, so nothing leaves the device on other steps."""

    def __init__(self, every_n_steps: int = 1):
        self.every_n_steps = every_n_steps
        self._sum: torch.Tensor | None = None
        self._count = 0

    def on_fit_start(self, trainer, pl_module) -> None:
        self._layers = weight_layers(pl_module.model)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        step = trainer.global_step
        if _due(step, self.every_n_steps):
            layers = self._layers
            grads = [m.weight.grad for m in layers.values()]
            if any(g is None for g in grads):
                return
            norms = torch.stack(torch._foreach_norm(grads))
            norms = torch.cat([norms, norms.norm().unsqueeze(0)])
            self._sum = norms if self._sum is None else self._sum + norms
            self._count += 1
        if self._sum is not None and _due(step, trainer.log_every_n_steps):
            names = [*self._layers, "total"]
            values = (self._sum / self._count).tolist()
            log_scalars(trainer, {f"grad_norm/{n}": v for n, v in zip(names, values)}, step)
            self._sum, self._count = None, 0


class UpdateRatioMonitor(L.Callback):
    """``update_ratio/<layer>``: log10(std(W_after - W_before) / std(W_before)) of one real
    optimizer step, every ``every_n_steps`` steps, measured from the parameters (right for
    Adam as well as SGD)."""

    def __init__(self, every_n_steps: int = 100):
        self.every_n_steps = every_n_steps
        self._before: dict[str, torch.Tensor] | None = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if _due(trainer.global_step, self.every_n_steps):
            self._before = {n: m.weight.detach().clone()
                            for n, m in weight_layers(pl_module.model).items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._before is None:
            return
        layers = weight_layers(pl_module.model)
        ratios = torch.stack([(layers[n].weight.detach() - w).std() / w.std()
                              for n, w in self._before.items()]).log10()
        log_scalars(trainer, {f"update_ratio/{n}": v
                              for n, v in zip(self._before, ratios.tolist())},
                    trainer.global_step - 1)
        self._before = None


class ProbeMonitor(L.Callback):
    """Glorot & Bengio's statistics on a fixed probe set of ``num_examples`` held-out examples,
    at step 0 (before any update), every ``every_n_steps`` steps and at the end.

    Histograms (``hist/activation|backprop|weight_grad/<layer>``, every finite value) at step 0,
    every ``histogram_every_n_steps`` and at the end; Jacobian singular values of the first
    ``jacobian_samples`` probe examples at step 0 and every ``jacobian_every_n_steps`` (and at
    the end; null: step 0 only; ``jacobian_samples=0``: never), exact or estimated
    (``jacobian_method``, see :func:`initlab.monitors.stats.jacobian_sv`). Writes
    ``init_stats.json`` (the step-0 numbers and ``run_info``) into the run directory. Runs on
    rank 0 only; one host transfer a probe.
    """

    def __init__(self, num_examples: int = 300, every_n_steps: int = 250,
                 histogram_every_n_steps: int | None = 1000,
                 jacobian_every_n_steps: int | None = None, jacobian_samples: int | None = 10,
                 jacobian_method: str = "auto", jacobian_max_exact: int = 1_000_000,
                 jacobian_probes: int = 4, jacobian_lanczos_steps: int = 30,
                 run_info: dict | None = None):
        self.num_examples, self.every_n_steps = num_examples, every_n_steps
        self.histogram_every_n_steps = histogram_every_n_steps
        self.jacobian_every_n_steps = jacobian_every_n_steps
        try:
            self.jacobian: JacobianConfig | None = JacobianConfig(
                jacobian_samples or None, jacobian_method, jacobian_max_exact, jacobian_probes,
                jacobian_lanczos_steps)
        except ValueError as err:
            raise ValueError(f"callbacks.probe.{err}") from None
        if jacobian_samples == 0:  # no Jacobians
            self.jacobian = None
        self.run_info = dict(run_info or {})
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self._last_step = -1
        self.timings_s = {"probe": 0.0}  # result.json's timings_s: seconds spent probing

    def _measure(self, trainer, pl_module, step: int, jacobian: bool, histograms: bool
                 ) -> tuple[Probe, dict[str, dict[str, float]]]:
        start = time.perf_counter()  # the measurement ends with its one host transfer: synced
        try:
            return self._probe_and_log(trainer, pl_module, step, jacobian, histograms)
        finally:
            self.timings_s["probe"] += time.perf_counter() - start

    def _probe_and_log(self, trainer, pl_module, step: int, jacobian: bool, histograms: bool
                       ) -> tuple[Probe, dict[str, dict[str, float]]]:
        """Probe, log, and return the result with its scalars as host numbers."""
        model = pl_module.model
        x, y = self._batch
        result = probe(model, x, y, getattr(model, "activation", "linear"),
                       jacobian=self.jacobian if jacobian else None)
        keys = [(layer, key) for layer, stats in result.scalars.items() for key in stats]
        packed = [torch.stack([result.scalars[layer][key].double() for layer, key in keys])]
        hist_tags = []
        if histograms and any(isinstance(lg, TensorBoardLogger) for lg in trainer.loggers):
            for kind, tensors in (("activation", result.activations),
                                  ("backprop", result.backprop),
                                  ("weight_grad", result.weight_grads)):
                for layer, t in tensors.items():
                    hist_tags.append(f"hist/{kind}/{layer}")
                    packed.append(histogram(t, HISTOGRAM_BINS))
        values = torch.cat(packed).tolist()  # the one host transfer
        host: dict[str, dict[str, float]] = {}
        for (layer, key), value in zip(keys, values):
            host.setdefault(layer, {})[key] = value
        log_scalars(trainer, {TAGS[key].format(layer): value for layer, stats in host.items()
                              for key, value in stats.items() if key in TAGS}, step)
        width = HISTOGRAM_BINS + 5
        for i, tag in enumerate(hist_tags):
            chunk = values[len(keys) + i * width: len(keys) + (i + 1) * width]
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    write_histogram(logger.experiment, tag, chunk, step)
        self._last_step = step
        return result, host

    def on_train_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        x, y = trainer.datamodule.probe_batch(self.num_examples)
        self._batch = (x.to(pl_module.device), y.to(pl_module.device))
        step = trainer.global_step
        result, host = self._measure(trainer, pl_module, step, jacobian=True,
                                     histograms=self.histogram_every_n_steps is not None)
        if step == 0:
            self._write_init_stats(trainer, pl_module, result, host)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self._batch is None or not _due(step, self.every_n_steps):
            return
        self._measure(trainer, pl_module, step,
                      jacobian=_due(step, self.jacobian_every_n_steps),
                      histograms=_due(step, self.histogram_every_n_steps))

    def on_train_end(self, trainer, pl_module) -> None:
        if self._batch is not None and trainer.global_step != self._last_step:
            self._measure(trainer, pl_module, trainer.global_step,
                          jacobian=self.jacobian_every_n_steps is not None,
                          histograms=self.histogram_every_n_steps is not None)

    def _write_init_stats(self, trainer, pl_module, result: Probe,
                          host: dict[str, dict[str, float]]) -> None:
        layers = weight_layers(pl_module.model)
        table = {}
        for name, stats in host.items():
            fan_in, fan_out = fans(layers[name].weight)
            table[name] = {"fan_in": fan_in, "fan_out": fan_out, **stats}
            if name in result.jacobian_method:
                table[name]["jacobian_method"] = result.jacobian_method[name]
        hidden = [n for n in table if "jacobian_mean_sv" in table[n]]
        summary = {
            **self.run_info,
            "jacobian_samples": (len(self._batch[0][: self.jacobian.samples])
                                 if self.jacobian is not None else 0),
            "layers": table,
            # the mean over hidden layers of each layer's mean singular value
            "jacobian_mean_sv": (sum(table[n]["jacobian_mean_sv"] for n in hidden) / len(hidden)
                                 if hidden else None),
        }
        path = Path(trainer.default_root_dir) / "init_stats.json"
        atomic_write(path, json.dumps(summary, indent=2).encode())


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
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "train_subset"):
            raise ValueError(f"GradientNoiseMonitor needs a datamodule with train_subset(n); got "
                             f"{type(datamodule).__name__}")
        x, y = datamodule.train_subset(self.num_examples)
        self._subset = (x.to(pl_module.device), y.to(pl_module.device))

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


class TrainClock(ValidationClock):
    """``time/train_s`` at every validation end of a fit (not the sanity check, not
    ``trainer.validate``) and at the end of training when that is a later step: wall seconds
    since fit start minus the seconds spent in validation (sanity check included; the
    ValidationClock it extends, result.json's validation time), at ``trainer.global_step``."""

    def __init__(self):
        super().__init__()
        self._last_step = -1

    def on_validation_end(self, trainer, pl_module) -> None:
        validations = self._validations
        super().on_validation_end(trainer, pl_module)
        if self._validations > validations and not trainer.sanity_checking:
            self._log(trainer, self.validation_end)

    def on_train_end(self, trainer, pl_module) -> None:
        # a run that stops between validations (max_steps, max_time) still gets its total
        if self.fit_start is not None and trainer.global_step > self._last_step:
            self._log(trainer, self.now(pl_module))

    def _log(self, trainer, now: float) -> None:
        log_scalars(trainer, {"time/train_s": now - self.fit_start - self.validation_s},
                    trainer.global_step)
        self._last_step = trainer.global_step
