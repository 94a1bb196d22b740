"""Every init scheme against its formula, on a large layer (tolerance from the sample size)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from initlab.init import SCHEMES, apply_init, fans
from initlab.models import MLP

FAN_IN, FAN_OUT = 800, 1200  # one Linear layer: 960k samples


def expected_variance(scheme: str, gain: float = 1.0, mode: str | None = None) -> float:
    fan = {"fan_in": FAN_IN, "fan_out": FAN_OUT, "fan_avg": (FAN_IN + FAN_OUT) / 2}
    return {
        "uniform": 1 / 3,
        "normal": 1.0,
        "standard": gain**2 / (3 * fan[mode or "fan_in"]),
        "xavier": gain**2 / fan[mode or "fan_avg"],
        "xavier_normal": gain**2 / fan[mode or "fan_avg"],
        "lecun": gain**2 / fan[mode or "fan_in"],
        "he": 2 * gain**2 / fan[mode or "fan_in"],
        "orthogonal": gain**2 / max(FAN_IN, FAN_OUT),  # out > in: orthonormal columns
        "default": 1 / (3 * FAN_IN),  # PyTorch's kaiming_uniform_(a=sqrt(5)) = the paper's Eq. 1
    }[scheme]


def assert_moments(w: torch.Tensor, variance: float) -> None:
    w, n = w.detach(), w.numel()
    std_err_var = math.sqrt(2 / n) * variance  # standard error of a sample variance (normal: 2)
    assert abs(float(w.mean())) < 5 * math.sqrt(variance / n)
    assert abs(float(w.var()) - variance) < 5 * std_err_var, (float(w.var()), variance)


@pytest.mark.parametrize("scheme", sorted(set(SCHEMES) - {"zeros"}))
def test_weight_variance_matches_formula(scheme):
    torch.manual_seed(0)
    layer = nn.Linear(FAN_IN, FAN_OUT)
    apply_init(layer, scheme, bias="zeros")
    assert_moments(layer.weight, expected_variance(scheme))


@pytest.mark.parametrize("scheme,mode", [("xavier", "fan_in"), ("standard", "fan_out"),
                                         ("he", "fan_avg")])
def test_mode_changes_the_fan(scheme, mode):
    torch.manual_seed(0)
    layer = nn.Linear(FAN_IN, FAN_OUT)
    apply_init(layer, scheme, mode=mode)
    assert_moments(layer.weight, expected_variance(scheme, mode=mode))


def test_auto_gain_uses_the_activation():
    torch.manual_seed(0)
    layer = nn.Linear(FAN_IN, FAN_OUT)
    apply_init(layer, "xavier", gain="auto", activation="tanh")
    assert_moments(layer.weight, expected_variance("xavier", gain=5 / 3))


def test_orthogonal_rows_are_orthonormal_times_gain():
    layer = nn.Linear(300, 200)
    apply_init(layer, "orthogonal", gain=2.0)
    w = layer.weight
    assert torch.allclose(w @ w.T, 4 * torch.eye(200), atol=1e-4)


def test_conv_fans_count_the_receptive_field():
    conv = nn.Conv2d(16, 32, 3)
    assert fans(conv.weight) == (16 * 9, 32 * 9)
    torch.manual_seed(0)
    big = nn.Conv2d(64, 128, 5)  # 204,800 weights
    apply_init(big, "xavier")
    assert_moments(big.weight, 2 / (64 * 25 + 128 * 25))


def test_bias_policy():
    layer = nn.Linear(100, 100)
    apply_init(layer, "xavier", bias="zeros")
    assert torch.count_nonzero(layer.bias) == 0
    apply_init(layer, "xavier", bias="default")  # bias "default" leaves it untouched
    assert torch.count_nonzero(layer.bias) == 0
    apply_init(layer, "default", bias="default")
    assert torch.count_nonzero(layer.bias) == 100
    assert float(layer.bias.abs().max()) <= 1 / math.sqrt(100)


def test_zeros_never_breaks_symmetry():
    torch.manual_seed(0)
    model = apply_init(MLP(depth=2, width=16, activation="tanh"), "zeros")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))
    for _ in range(5):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    for name in ("fc1", "fc2"):  # every hidden unit still computes the same function
        w = getattr(model, name).weight
        assert torch.allclose(w, w[:1].expand_as(w))


@pytest.mark.parametrize("kwargs,message", [
    ({"scheme": "nope"}, r"init.scheme='nope' is unknown; allowed: \['default', 'he'"),
    ({"scheme": "xavier", "mode": "fan_mid"}, r"init.mode='fan_mid' is unknown"),
    ({"scheme": "xavier", "bias": "ones"}, r"init.bias='ones' is unknown"),
    ({"scheme": "xavier", "gain": -1}, r"init.gain=-1 is invalid"),
])
def test_bad_init_values_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        apply_init(nn.Linear(2, 2), **kwargs)
