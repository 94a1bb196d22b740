"""Weight initialization schemes (formulas in docs: Glorot & Bengio 2010, LeCun 1998, He 2015).

Each scheme is one small function over a weight tensor. ``fan`` is fan_in, fan_out or their
mean (``mode``), with fan_in = C_in*kh*kw and fan_out = C_out*kh*kw for a conv.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from initlab.models.activations import GAINS

MODES = ("fan_in", "fan_out", "fan_avg")
BIAS_POLICIES = ("zeros", "default")


def fans(weight: torch.Tensor) -> tuple[int, int]:
    receptive = weight[0][0].numel() if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def _fan(weight: torch.Tensor, mode: str) -> float:
    fan_in, fan_out = fans(weight)
    return {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]


def zeros(w, gain, mode, scale):
    """All zero: every unit computes the same thing and symmetry is never broken."""
    nn.init.zeros_(w)


def uniform(w, gain, mode, scale):
    """Naive U[-a, a], a = ``scale`` (default 1): Var = a^2/3, whatever the layer size."""
    nn.init.uniform_(w, -scale, scale)


def normal(w, gain, mode, scale):
    """Naive N(0, s^2), s = ``scale`` (default 1)."""
    nn.init.normal_(w, 0.0, scale)


def standard(w, gain, mode, scale):
    """Glorot & Bengio Eq. 1: U[-1/sqrt(fan_in), 1/sqrt(fan_in)], Var = 1/(3 fan_in)."""
    bound = gain / math.sqrt(_fan(w, mode))
    nn.init.uniform_(w, -bound, bound)


def xavier(w, gain, mode, scale):
    """Glorot & Bengio Eq. 16, "normalized": U[+-sqrt(6/(fan_in+fan_out))], Var = 2/(in+out).
    With mode=fan_in: Var = 1/fan_in (what some course material calls "Xavier")."""
    bound = gain * math.sqrt(3.0 / _fan(w, mode))
    nn.init.uniform_(w, -bound, bound)


def xavier_normal(w, gain, mode, scale):
    """N(0, 2/(fan_in+fan_out)) (Glorot & Bengio's variance with a normal distribution)."""
    nn.init.normal_(w, 0.0, gain / math.sqrt(_fan(w, mode)))


def lecun(w, gain, mode, scale):
    """LeCun et al. 1998: N(0, 1/fan_in) (Caffe's "xavier" filler)."""
    nn.init.normal_(w, 0.0, gain / math.sqrt(_fan(w, mode)))


def he(w, gain, mode, scale):
    """He et al. 2015: N(0, 2/fan_in), the factor 2 because ReLU zeroes half the signal."""
    nn.init.normal_(w, 0.0, gain * math.sqrt(2.0 / _fan(w, mode)))


def orthogonal(w, gain, mode, scale):
    """Saxe et al. 2013: a (semi-)orthogonal matrix (conv weights flattened) times ``gain``."""
    nn.init.orthogonal_(w, gain)


SCHEMES = {f.__name__: f for f in
           (zeros, uniform, normal, standard, xavier, xavier_normal, lecun, he, orthogonal)}
SCHEMES["default"] = None  # PyTorch's own reset_parameters()
DEFAULT_MODES = {"xavier": "fan_avg", "xavier_normal": "fan_avg"}  # the rest use fan_in


def resolve_gain(gain: float | str, activation: str) -> float:
    if gain == "auto":
        return GAINS[activation]
    if isinstance(gain, bool) or not isinstance(gain, (int, float)) or gain <= 0:
        raise ValueError(f"init.gain={gain!r} is invalid: it must be a number > 0 or 'auto'")
    return float(gain)


def check_init(scheme: str, mode: str | None, bias: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"init.scheme={scheme!r} is unknown; allowed: {sorted(SCHEMES)}")
    if mode is not None and mode not in MODES:
        raise ValueError(f"init.mode={mode!r} is unknown; allowed: {list(MODES)} or null")
    if bias not in BIAS_POLICIES:
        raise ValueError(f"init.bias={bias!r} is unknown; allowed: {list(BIAS_POLICIES)}")


@torch.no_grad()
def apply_init(model: nn.Module, scheme: str = "default", gain: float | str = 1.0,
               mode: str | None = None, bias: str = "zeros", scale: float = 1.0,
               activation: str = "linear") -> nn.Module:
    """Initialise every Conv and Linear weight of ``model`` with ``scheme``.

    ``gain="auto"`` takes the gain for ``activation``; ``mode=None`` uses the scheme's own fan
    (fan_avg for xavier, fan_in otherwise). ``bias="zeros"`` zeroes biases as the paper does,
    ``"default"`` keeps PyTorch's U[-1/sqrt(fan_in), ...].
    """
    check_init(scheme, mode, bias)
    gain = resolve_gain(gain, activation)
    mode = mode or DEFAULT_MODES.get(scheme, "fan_in")
    for module in model.modules():
        if not isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            continue
        if scheme == "default":
            module.reset_parameters()
        else:
            SCHEMES[scheme](module.weight, gain, mode, scale)
        if module.bias is not None and bias == "zeros":
            nn.init.zeros_(module.bias)
    return model
