"""Weight initialization schemes (formulas in docs: Glorot & Bengio 2010, LeCun 1998, He 2015).

One convention, torch.nn.init's: each scheme's variance is gain^2 times a base that carries no
activation factor, and ``init.gain`` is the only place an activation's factor enters.
``fan`` is fan_in, fan_out or their mean (``mode``), with fan_in = C_in*kh*kw and
fan_out = C_out*kh*kw for a conv.

| scheme        | Var(W)                         | default gain         |
|---------------|--------------------------------|----------------------|
| standard      | g^2 / (3 fan)   (fan_in)       | 1                    |
| xavier        | g^2 / fan       (fan_avg)      | 1                    |
| xavier_normal | g^2 / fan       (fan_avg)      | 1                    |
| lecun         | g^2 / fan       (fan_in)       | 1                    |
| he            | g^2 / fan       (fan_in)       | relu = sqrt(2): 2/fan_in |
| orthogonal    | g^2 / max(rows, cols)          | 1                    |

zeros, constant, uniform, normal and default (PyTorch's own) take no gain and no mode.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from initlab.utils import weight_layers

MODES = ("fan_in", "fan_out", "fan_avg")
BIAS_POLICIES = ("zeros", "default")

# torch.nn.init.calculate_gain where it defines one; softsign and elu get 1 (no standard value).
GAINS = {
    "relu": math.sqrt(2.0),
    "tanh": 5.0 / 3,
    "sigmoid": 1.0,
    "softsign": 1.0,
    "leaky_relu": math.sqrt(2.0 / (1 + 0.01**2)),
    "elu": 1.0,
    "linear": 1.0,
}


def fans(weight: torch.Tensor) -> tuple[int, int]:
    receptive = weight[0][0].numel() if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def _fan(weight: torch.Tensor, mode: str) -> float:
    fan_in, fan_out = fans(weight)
    return {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]


def zeros(w, gain, mode, scale):
    """All zero: every unit computes the same thing and symmetry is never broken."""
    nn.init.zeros_(w)


def constant(w, gain, mode, scale):
    """Every weight = ``scale``: Var = 0, and, like zeros, every unit of a layer stays identical
    (they all see the same input and get the same gradient), but the signal is not zero."""
    nn.init.constant_(w, scale)


def uniform(w, gain, mode, scale):
    """Naive U[-a, a], a = ``scale`` (default 1): Var = a^2/3, whatever the layer size."""
    nn.init.uniform_(w, -scale, scale)


def normal(w, gain, mode, scale):
    """Naive N(0, s^2), s = ``scale`` (default 1)."""
    nn.init.normal_(w, 0.0, scale)


def standard(w, gain, mode, scale):
    """Glorot & Bengio Eq. 1: U[-g/sqrt(fan_in), g/sqrt(fan_in)], Var = g^2/(3 fan_in)."""
    bound = gain / math.sqrt(_fan(w, mode))
    nn.init.uniform_(w, -bound, bound)


def xavier(w, gain, mode, scale):
    """Glorot & Bengio Eq. 16, "normalized": U[+-g sqrt(6/(fan_in+fan_out))], Var = 2 g^2/(in+out).
    With mode=fan_in: Var = g^2/fan_in (what some course material calls "Xavier")."""
    bound = gain * math.sqrt(3.0 / _fan(w, mode))
    nn.init.uniform_(w, -bound, bound)


def xavier_normal(w, gain, mode, scale):
    """N(0, 2 g^2/(fan_in+fan_out)) (Glorot & Bengio's variance with a normal distribution)."""
    nn.init.normal_(w, 0.0, gain / math.sqrt(_fan(w, mode)))


def lecun(w, gain, mode, scale):
    """LeCun et al. 1998: N(0, g^2/fan_in) (Caffe's "xavier" filler)."""
    nn.init.normal_(w, 0.0, gain / math.sqrt(_fan(w, mode)))


def he(w, gain, mode, scale):
    """He et al. 2015: N(0, g^2/fan_in) with g the ReLU gain sqrt(2) by default, i.e. 2/fan_in
    (torch's kaiming_normal_): ReLU zeroes half the signal."""
    nn.init.normal_(w, 0.0, gain / math.sqrt(_fan(w, mode)))


def orthogonal(w, gain, mode, scale):
    """Saxe et al. 2013: a (semi-)orthogonal matrix times g. Conv weights are flattened to
    C_out rows of fan_in = C_in*kh*kw columns, so Var = g^2/max(C_out, fan_in)."""
    nn.init.orthogonal_(w, gain)


SCHEMES = {f.__name__: f for f in
           (zeros, constant, uniform, normal, standard, xavier, xavier_normal, lecun, he, orthogonal)}
SCHEMES["default"] = None  # PyTorch's own reset_parameters()
DEFAULT_MODES = {"xavier": "fan_avg", "xavier_normal": "fan_avg"}  # the rest use fan_in
DEFAULT_GAINS = {"he": "relu"}  # the rest: 1
NO_GAIN = ("zeros", "constant", "uniform", "normal", "default")  # schemes a gain cannot change
NO_MODE = ("zeros", "constant", "uniform", "normal", "default", "orthogonal")
SCALED = ("constant", "uniform", "normal")  # a fixed scale (value, bound, std) instead of a fan


def resolve_gain(gain: float | str | None, activation: str, scheme: str = "standard") -> float:
    """The gain in effect: a number; ``auto`` = the gain for the model's ``activation``; an
    activation's name = its gain (``relu`` = sqrt 2); null = the scheme's default."""
    if gain is None:
        gain = DEFAULT_GAINS.get(scheme, 1.0)
    if gain == "auto":
        return GAINS[activation]
    if isinstance(gain, str) and gain in GAINS:
        return GAINS[gain]
    if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not gain > 0:
        raise ValueError(f"init.gain={gain!r} is invalid: it must be a number > 0, null (the "
                         f"scheme's default), 'auto' or an activation name {sorted(GAINS)}")
    return float(gain)


def check_init(scheme: str, mode: str | None, bias: str, gain=None, scale: float = 1.0) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"init.scheme={scheme!r} is unknown; allowed: {sorted(SCHEMES)}")
    if mode is not None and mode not in MODES:
        raise ValueError(f"init.mode={mode!r} is unknown; allowed: {list(MODES)} or null")
    if bias not in BIAS_POLICIES:
        raise ValueError(f"init.bias={bias!r} is unknown; allowed: {list(BIAS_POLICIES)}")
    if scheme in NO_GAIN and gain is not None and gain != 1:
        hint = (" (for PyTorch's weights with a gain: init=standard init.gain=G init.bias=default)"
                if scheme == "default" else "")
        raise ValueError(f"init.scheme={scheme!r} takes no gain, got init.gain={gain!r}: leave it "
                         f"null or 1; schemes with a gain: "
                         f"{sorted(set(SCHEMES) - set(NO_GAIN))}{hint}")
    if scheme in NO_MODE and mode is not None:
        raise ValueError(f"init.scheme={scheme!r} takes no mode, got init.mode={mode!r}: leave it "
                         f"null; schemes with a fan mode: {sorted(set(SCHEMES) - set(NO_MODE))}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"init.scale={scale!r} is invalid: it must be a number > 0")
    if scheme not in SCALED and scale != 1:
        raise ValueError(f"init.scheme={scheme!r} takes no scale, got init.scale={scale!r}: only "
                         f"{list(SCALED)} use it (their value / bound / std)")


@torch.no_grad()
def apply_init(model: nn.Module, scheme: str = "default", gain: float | str | None = None,
               mode: str | None = None, bias: str = "zeros", scale: float = 1.0,
               activation: str = "linear") -> nn.Module:
    """Initialise every Conv and Linear weight of ``model`` with ``scheme``.

    ``gain``: see ``resolve_gain``; ``mode=None`` uses the scheme's own fan (fan_avg for
    xavier, fan_in otherwise). ``bias="zeros"`` zeroes biases as the paper does, ``"default"``
    keeps PyTorch's U[-1/sqrt(fan_in), ...].
    """
    check_init(scheme, mode, bias, gain, scale)
    gain = resolve_gain(gain, activation, scheme)
    mode = mode or DEFAULT_MODES.get(scheme, "fan_in")
    for module in weight_layers(model).values():
        if scheme == "default":
            module.reset_parameters()
        else:
            SCHEMES[scheme](module.weight, gain, mode, scale)
        if module.bias is not None and bias == "zeros":
            nn.init.zeros_(module.bias)
    return model
