"""Lightning callbacks that log the per-layer statistics to every attached logger.

Nothing here runs on steps that do not log: the probe and the update ratio attach their work
only on their own steps, and gradient norms stay on the device until a logging step.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from initlab.init import fans
from initlab.monitors.stats import Probe, probe
from initlab.utils import atomic_write, weight_layers

# stats.py key -> TensorBoard tag ({} = the layer's module name)
TAGS = {
    "activation_mean": "activation/{}/mean",
    "activation_std": "activation/{}/std",
    "activation_p98": "activation/{}/p98",
    "activation_saturated": "activation/{}/saturated",
    "backprop_std": "backprop/{}/std",
    "weight_grad_std": "weight_grad/{}/std",
    "jacobian_mean_sv": "jacobian/{}/mean_sv",
    "fan_in_var": "weights/{}/fan_in_var",
    "fan_out_var": "weights/{}/fan_out_var",
}
HISTOGRAM_SAMPLE = 100_000  # values per histogram: enough for its shape, cheap to bin


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
        "back-propagated gradient std dC/ds": ["backprop/.*/std"],
        "weight gradient std": ["weight_grad/.*/std"],
        "Jacobian mean singular value": ["jacobian/.*/mean_sv"],
        "fan_in Var(W)": ["weights/.*/fan_in_var"], "fan_out Var(W)": ["weights/.*/fan_out_var"],
        "update ratio log10": ["update_ratio/.*"], "weight gradient L2 norm": ["grad_norm/.*"],
    },
}


def add_layout(logger: TensorBoardLogger) -> None:
    """TensorBoard custom-scalars layout: one chart per statistic, all layers overlaid (the
    paper's figures), and train vs validation on one chart (the generalisation gap)."""
    logger.experiment.add_custom_scalars({
        category: {title: ["Multiline", tags] for title, tags in charts.items()}
        for category, charts in LAYOUT_CHARTS.items()})


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

    Histograms (``hist/activation|backprop|weight_grad/<layer>``) at step 0, every
    ``histogram_every_n_steps`` and at the end; Jacobian singular values at step 0 and every
    ``jacobian_every_n_steps`` (and at the end; null: step 0 only). Writes ``init_stats.json`` (the step-0
    numbers and ``run_info``) into the run directory, and a TensorBoard custom-scalars layout.
    Runs on rank 0 only.
    """

    def __init__(self, num_examples: int = 300, every_n_steps: int = 250,
                 histogram_every_n_steps: int | None = 1000,
                 jacobian_every_n_steps: int | None = None, jacobian_samples: int = 10,
                 run_info: dict | None = None):
        self.num_examples, self.every_n_steps = num_examples, every_n_steps
        self.histogram_every_n_steps = histogram_every_n_steps
        self.jacobian_every_n_steps, self.jacobian_samples = jacobian_every_n_steps, jacobian_samples
        self.run_info = dict(run_info or {})
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self._last_step = -1

    def _measure(self, trainer, pl_module, step: int, jacobian: bool, histograms: bool) -> Probe:
        model = pl_module.model
        x, y = self._batch
        result = probe(model, x, y, getattr(model, "activation", "linear"),
                       jacobian_samples=self.jacobian_samples if jacobian else 0)
        metrics = {TAGS[key].format(layer): value
                   for layer, stats in result.scalars.items()
                   for key, value in stats.items() if key in TAGS}
        values = torch.stack(list(metrics.values())).tolist()  # one host transfer
        log_scalars(trainer, dict(zip(metrics, values)), step)
        if histograms:
            self._histograms(trainer, result, step)
        self._last_step = step
        return result

    def _histograms(self, trainer, result: Probe, step: int) -> None:
        for logger in trainer.loggers:
            if not isinstance(logger, TensorBoardLogger):
                continue
            for kind, tensors in (("activation", result.activations),
                                  ("backprop", result.backprop),
                                  ("weight_grad", result.weight_grads)):
                for layer, t in tensors.items():
                    flat = t.detach().flatten()
                    flat = flat[torch.isfinite(flat)]  # a diverging run: bin what is finite
                    if flat.numel() == 0:
                        continue
                    if flat.numel() > HISTOGRAM_SAMPLE:
                        flat = flat[:: math.ceil(flat.numel() / HISTOGRAM_SAMPLE)]
                    logger.experiment.add_histogram(f"hist/{kind}/{layer}", flat.float().cpu(), step)

    def on_train_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        x, y = trainer.datamodule.probe_batch(self.num_examples)
        self._batch = (x.to(pl_module.device), y.to(pl_module.device))
        step = trainer.global_step
        result = self._measure(trainer, pl_module, step, jacobian=True,
                               histograms=self.histogram_every_n_steps is not None)
        if step == 0:
            self._write_init_stats(trainer, pl_module, result)

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

    def _write_init_stats(self, trainer, pl_module, result: Probe) -> None:
        layers = weight_layers(pl_module.model)
        table = {}
        for name, stats in result.scalars.items():
            fan_in, fan_out = fans(layers[name].weight)
            table[name] = {"fan_in": fan_in, "fan_out": fan_out,
                           **{k: float(v) for k, v in stats.items()}}
        hidden = [n for n in table if "jacobian_mean_sv" in table[n]]
        summary = {
            **self.run_info,
            "layers": table,
            "jacobian_mean_sv": (sum(table[n]["jacobian_mean_sv"] for n in hidden) / len(hidden)
                                 if hidden else None),
        }
        path = Path(trainer.default_root_dir) / "init_stats.json"
        atomic_write(path, json.dumps(summary, indent=2).encode())
