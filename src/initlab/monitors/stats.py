"""Per-layer statistics of Glorot & Bengio (2010) on a fixed probe batch.

Pure functions over a model that exposes ``hidden_layers()`` -> [(name, layer, activation)]:
the activation module's input is the pre-activation s, its output the activation z.
Everything stays a tensor on the model's device; callers move numbers to the host.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn

from initlab.init import fans
from initlab.utils import weight_layers

SATURATION = 0.97
QUANTILE_SAMPLE = 1 << 17  # tanh/softsign |a| > 0.97; sigmoid a < 0.03 or a > 0.97


def saturated_fraction(a: torch.Tensor, activation: str) -> torch.Tensor:
    """Fraction of saturated units; for ReLU the fraction of units dead on the whole batch."""
    if activation in ("tanh", "softsign"):
        return (a.abs() > SATURATION).float().mean()
    if activation == "sigmoid":
        return ((a < 1 - SATURATION) | (a > SATURATION)).float().mean()
    if activation == "relu":
        return (a.flatten(1) <= 0).all(dim=0).float().mean()
    return torch.zeros((), device=a.device)


@dataclass
class Probe:
    """What one probe pass measured: scalars per layer, and raw tensors for histograms."""

    scalars: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    activations: dict[str, torch.Tensor] = field(default_factory=dict)
    backprop: dict[str, torch.Tensor] = field(default_factory=dict)
    weight_grads: dict[str, torch.Tensor] = field(default_factory=dict)


def _capture(model: nn.Module):
    """Forward hooks recording each hidden layer's input, pre-activation and activation."""
    record: dict[str, dict[str, torch.Tensor]] = {}
    handles = []
    for name, layer, act in model.hidden_layers():
        entry = record.setdefault(name, {})
        handles.append(layer.register_forward_hook(
            lambda m, inp, out, e=entry: e.update(layer_in=inp[0], layer_out=out)))
        handles.append(act.register_forward_hook(
            lambda m, inp, out, e=entry: e.update(pre=inp[0], act=out)))
    return record, handles


def probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor, activation: str,
          jacobian_samples: int | None = 0) -> Probe:
    """One forward/backward pass on the probe batch, in eval mode, leaving ``.grad`` untouched.

    ``jacobian_samples``: 0 skips the Jacobians; otherwise the number of examples used for the
    exact SVD of fully connected layers (None = all).
    """
    was_training = model.training
    model.eval()
    result = Probe()
    try:
        with torch.enable_grad():
            record, handles = _capture(model)
            try:
                loss = F.cross_entropy(model(x), y)
            finally:
                for h in handles:
                    h.remove()
            layers = weight_layers(model)
            names = list(record)
            pre = [record[n]["pre"] for n in names]
            weights = [m.weight for m in layers.values()]
            grads = torch.autograd.grad(loss, pre + weights)
        for name, g in zip(layers, grads[len(pre):]):
            w = layers[name].weight.detach()
            fan_in, fan_out = fans(w)
            var = w.var()
            result.weight_grads[name] = g
            result.scalars[name] = {
                "weight_grad_std": g.std(), "weight_var": var,
                "fan_in_var": fan_in * var, "fan_out_var": fan_out * var,
            }
        for name, g in zip(names, grads[: len(pre)]):
            a = record[name]["act"].detach()
            result.activations[name], result.backprop[name] = a, g
            flat = a.flatten().float()
            # quantile sorts its input: a strided sample of <= 131k values keeps it cheap
            sample = flat[:: -(-flat.numel() // QUANTILE_SAMPLE)]
            result.scalars[name].update({
                "activation_mean": a.mean(), "activation_std": a.std(),
                "activation_p98": torch.quantile(sample, 0.98),
                "activation_saturated": saturated_fraction(a, activation),
                "backprop_std": g.std(),
            })
        if jacobian_samples != 0:
            for name, sv in jacobian_mean_sv(model, x, record, jacobian_samples).items():
                result.scalars[name]["jacobian_mean_sv"] = sv
    finally:
        model.train(was_training)
    return result


def _direct_linear(layer: nn.Module, entry: dict, previous: torch.Tensor) -> bool:
    """True when z_k = act(W z_{k-1} + b) exactly: a Linear fed the previous activation and
    feeding its activation directly (no pooling, normalisation or reshaping in between)."""
    return (isinstance(layer, nn.Linear)
            and entry["layer_in"].data_ptr() == previous.data_ptr()
            and entry["layer_in"].numel() == previous.numel()
            and entry["layer_out"].data_ptr() == entry["pre"].data_ptr())


@torch.no_grad()
def jacobian_mean_sv(model: nn.Module, x: torch.Tensor, record: dict,
                     samples: int | None = None) -> dict[str, torch.Tensor]:
    """Mean singular value of J_k = dz_k/dz_{k-1} per hidden layer (z_0 = the input).

    Fully connected layers: J = diag(f'(s_k)) W_k, exact SVD per example (first ``samples``
    examples), averaged. Other layers (conv, pooling, normalisation in between): the
    root-mean-square singular value sqrt(||J||_F^2 / min(m, n)), with ||J||_F^2 = E||J v||^2
    for v ~ N(0, I) computed by forward-mode AD, one tangent per example (first ``samples``
    examples); RMS >= mean.
    """
    out: dict[str, torch.Tensor] = {}
    hidden = model.hidden_layers()
    previous = x
    for k, (name, layer, act) in enumerate(hidden):
        entry = record[name]
        if _direct_linear(layer, entry, previous):
            s = entry["pre"][:samples].detach()
            with torch.enable_grad():
                s_ = s.clone().requires_grad_()
                slope = torch.autograd.grad(act(s_).sum(), s_)[0]
            jac = slope.unsqueeze(-1) * layer.weight.detach()
            try:
                out[name] = torch.linalg.svdvals(jac).mean()
            except RuntimeError:  # non-finite weights of a diverging run: SVD cannot converge
                out[name] = torch.tensor(float("nan"), device=jac.device)
        else:
            out[name] = _rms_sv(model, x[:samples], hidden, k)
        previous = entry["act"]
    return out


def _rms_sv(model: nn.Module, x: torch.Tensor, hidden, k: int) -> torch.Tensor:
    target_act = hidden[k][2]
    source_act = hidden[k - 1][2] if k > 0 else None
    seen: dict[str, torch.Tensor] = {}

    def perturb(module, inp, output):
        seen["v"] = torch.randn_like(output)
        return fwAD.make_dual(output, seen["v"])

    def read(module, inp, output):
        seen["z"], seen["jv"] = output, fwAD.unpack_dual(output).tangent

    handles = [target_act.register_forward_hook(read)]
    if source_act is not None:
        handles.append(source_act.register_forward_hook(perturb))
    try:
        with fwAD.dual_level():
            if source_act is None:
                seen["v"] = torch.randn_like(x)
                model(fwAD.make_dual(x, seen["v"]))
            else:
                model(x)
    finally:
        for h in handles:
            h.remove()
    jv, v = seen["jv"], seen["v"]
    m, n = jv[0].numel(), v[0].numel()
    frob2 = jv.flatten(1).pow(2).sum(1) * n / v.flatten(1).pow(2).sum(1)  # E||Jv||^2, |v|^2 ~ n
    return (frob2 / min(m, n)).sqrt().mean()
