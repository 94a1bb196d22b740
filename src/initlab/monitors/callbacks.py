"""Lightning callbacks that log the per-layer statistics to every attached logger.

Nothing here runs on steps that do not log: the probe and the update ratio attach their work
only on their own steps, and gradient norms stay on the device until a logging step.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from initlab.init import fans
from initlab.monitors.stats import (
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
        "test error during training (%)": ["test_curve/error"],
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
    "test error during training (%)": "test_curve",
    "Jacobian mean singular value": "jacobian", "Jacobian RMS singular value": "jacobian",
    "update ratio log10": "update_ratio", "weight gradient L2 norm": "grad_norm",
}


def add_layout(logger: TensorBoardLogger, callbacks=(), corruptions: bool = False) -> None:
    """TensorBoard custom-scalars layout: one chart per statistic, all layers overlaid (the
    paper's figures), and train vs validation on one chart (the generalisation gap). Charts
    nothing will fill are left out: the corruption chart without corrupted test sets, a
    monitor's charts without that monitor among ``callbacks``."""
    from initlab.monitors.curves import TestErrorCurve  # it imports this module

    probe = next((c for c in callbacks if isinstance(c, ProbeMonitor)), None)
    present = {"corruptions": corruptions, "probe": probe is not None,
               "jacobian": probe is not None and probe.jacobian is not None,
               "update_ratio": any(isinstance(c, UpdateRatioMonitor) for c in callbacks),
               "grad_norm": any(isinstance(c, GradNormMonitor) for c in callbacks),
               "test_curve": any(isinstance(c, TestErrorCurve) for c in callbacks)}
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
    ``grad_norm/total``, after DDP's gradient all-reduce: the mean over every
    ``every_n_steps``-th step since the last logging step, so nothing leaves the device on
    other steps.

    A step costs one operation, the norms (a fused ``_foreach_norm``), kept as they come: right
    after the backward pass every small operation is slow (its code out of the CPU's caches:
    30-100 us each on the 2-core CPU), and with the four that summed the norms there the hook
    cost 0.3 ms a step (0.41 s of the 3-epoch default run; now 0.25 s). They are summed, in step
    order as before, at each logging step (and every ``_KEPT`` steps between, for a long
    cadence)."""

    _KEPT = 64

    def __init__(self, every_n_steps: int = 1):
        self.every_n_steps = every_n_steps
        self._pending: list[list[torch.Tensor]] = []  # each due step's norms, not yet summed
        self._sum: torch.Tensor | None = None
        self._count = 0

    def on_fit_start(self, trainer, pl_module) -> None:
        self._layers = weight_layers(pl_module.model)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        step = trainer.global_step
        if _due(step, self.every_n_steps):
            grads = [m.weight.grad for m in self._layers.values()]
            if any(g is None for g in grads):
                return
            self._pending.append(torch._foreach_norm(grads))
            if len(self._pending) == self._KEPT:
                self._fold()
        if _due(step, trainer.log_every_n_steps):
            self._fold()
            if self._sum is not None:
                names = [*self._layers, "total"]
                values = (self._sum / self._count).tolist()
                log_scalars(trainer, {f"grad_norm/{n}": v for n, v in zip(names, values)},
                            step)
            self._sum, self._count = None, 0

    def _fold(self) -> None:
        """Each pending step's norms and their total, added to the running sum."""
        for norms in self._pending:
            norms = torch.stack(norms)
            norms = torch.cat([norms, norms.norm().unsqueeze(0)])
            self._sum = norms if self._sum is None else self._sum + norms
            self._count += 1
        self._pending.clear()


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
        result = probe(model, x, y, model.activation, jacobian=self.jacobian if jacobian else None)
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
