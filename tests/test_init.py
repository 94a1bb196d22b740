"""Every init scheme against its formula, on a large layer (tolerance from the sample size)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from initlab.init import SCHEMES, apply_init, fans
from initlab.models import MLP
from initlab.train import build
from tests.helpers import CONF

FAN_IN, FAN_OUT = 800, 1200  # one Linear layer: 960k samples


def expected_variance(scheme: str, gain: float = 1.0, mode: str | None = None,
                      fan_in: int = FAN_IN, fan_out: int = FAN_OUT, rows: int = FAN_OUT) -> float:
    """The formula table of docs/init.md, written out independently of initlab.init."""
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}
    return {
        "uniform": 1 / 3,
        "normal": 1.0,
        "standard": gain**2 / (3 * fan[mode or "fan_in"]),
        "xavier": gain**2 / fan[mode or "fan_avg"],
        "xavier_normal": gain**2 / fan[mode or "fan_avg"],
        "lecun": gain**2 / fan[mode or "fan_in"],
        "he": gain**2 / fan[mode or "fan_in"],
        "orthogonal": gain**2 / max(rows, fan_in),  # flattened to (rows, fan_in), semi-orthogonal
        "default": 1 / (3 * fan_in),  # PyTorch's kaiming_uniform_(a=sqrt(5)) = the paper's Eq. 1
    }[scheme]


# the gain each setting must put in effect: init.gain=null is 1, except he (the ReLU gain)
NULL_GAIN = {"he": math.sqrt(2)}
ACTIVATION_GAIN = {"relu": math.sqrt(2), "tanh": 5 / 3}
GAINLESS = {"zeros", "constant", "uniform", "normal", "default"}


def assert_moments(w: torch.Tensor, variance: float) -> None:
    w, n = w.detach(), w.numel()
    std_err_var = math.sqrt(2 / n) * variance  # standard error of a sample variance (normal: 2)
    assert abs(float(w.mean())) < 5 * math.sqrt(variance / n)
    assert abs(float(w.var()) - variance) < 5 * std_err_var, (float(w.var()), variance)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("gain", [None, 1.0, "auto"])
@pytest.mark.parametrize("scheme", sorted(set(SCHEMES) - {"zeros", "constant"}))
def test_weight_variance_matches_formula(scheme, gain, activation):
    """Every scheme x gain setting x activation, on a Linear and on a conv whose fans differ."""
    if scheme in GAINLESS and gain == "auto":
        with pytest.raises(ValueError, match=f"init.scheme='{scheme}' takes no gain"):
            apply_init(nn.Linear(4, 4), scheme, gain=gain, activation=activation)
        return
    in_effect = {None: NULL_GAIN.get(scheme, 1.0), 1.0: 1.0, "auto": ACTIVATION_GAIN[activation]}
    torch.manual_seed(0)
    layer = nn.Linear(FAN_IN, FAN_OUT)
    apply_init(layer, scheme, gain=gain, bias="zeros", activation=activation)
    assert_moments(layer.weight, expected_variance(scheme, in_effect[gain]))
    conv = nn.Conv2d(48, 96, 5)  # 115k weights; fan_in 1200, fan_out 2400, 96 rows
    apply_init(conv, scheme, gain=gain, bias="zeros", activation=activation)
    assert_moments(conv.weight, expected_variance(scheme, in_effect[gain], fan_in=1200,
                                                  fan_out=2400, rows=96))


def test_he_with_auto_gain_on_relu_is_two_over_fan_in():
    """The factor 2 is counted once: he's default gain and gain=auto on ReLU agree."""
    torch.manual_seed(0)
    for gain in (None, "auto", "relu"):
        layer = nn.Linear(FAN_IN, FAN_OUT)
        apply_init(layer, "he", gain=gain, activation="relu")
        assert_moments(layer.weight, 2 / FAN_IN)


def test_default_init_refuses_a_gain_it_cannot_honour():
    with pytest.raises(ValueError, match=r"init.scheme='default' takes no gain, got "
                                         r"init.gain=2.*init=standard init.gain=G"):
        apply_init(nn.Linear(4, 4), "default", gain=2.0)
    with pytest.raises(ValueError, match=r"init.scheme='default' takes no mode"):
        apply_init(nn.Linear(4, 4), "default", mode="fan_out")
    with pytest.raises(ValueError, match=r"init.scheme='xavier' takes no scale"):
        apply_init(nn.Linear(4, 4), "xavier", scale=2.0)


INITS = sorted(p.stem for p in (CONF / "init").glob("*.yaml"))
DEFAULT_CNN = ("model.channels=[24,32]", "model.hidden=256")  # fc1: 800 -> 256


@pytest.mark.parametrize("init", INITS)
def test_every_init_config_builds_what_it_says(make_cfg, init):
    """Each conf/init option, composed and built as a run builds it, puts its documented
    variance on the default CNN."""
    _, module, _ = build(make_cfg(f"init={init}", *DEFAULT_CNN))
    fc1 = module.model.fc1
    w = fc1.weight
    if init == "zeros":
        assert torch.count_nonzero(w) == 0
    elif init == "constant":  # the documented 0.01, biases zero
        assert torch.equal(w, torch.full_like(w, 0.01))
        assert torch.count_nonzero(fc1.bias) == 0
    else:
        assert_moments(w, expected_variance(init, NULL_GAIN.get(init, 1.0), fan_in=800,
                                            fan_out=256, rows=256))


@pytest.mark.parametrize("overrides,variance", [
    (("init=xavier", "init.gain=auto"), 2 / 528),  # ReLU's gain^2 = 2 over fan_avg (800 + 256) / 2
    (("init=xavier", "init.mode=fan_in"), 1 / 800),
    (("init=standard", "init.gain=2"), 4 / (3 * 800)),
])
def test_init_settings_in_the_config_are_in_effect(make_cfg, overrides, variance):
    _, module, _ = build(make_cfg(*overrides, *DEFAULT_CNN))
    assert_moments(module.model.fc1.weight, variance)


@pytest.mark.parametrize("scheme,mode", [("xavier", "fan_in"), ("standard", "fan_out"),
                                         ("he", "fan_avg")])
def test_mode_changes_the_fan(scheme, mode):
    torch.manual_seed(0)
    layer = nn.Linear(FAN_IN, FAN_OUT)
    apply_init(layer, scheme, mode=mode)
    assert_moments(layer.weight, expected_variance(scheme, NULL_GAIN.get(scheme, 1.0), mode=mode))


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


@pytest.mark.parametrize("value", [0.01, 0.5])
def test_constant_sets_every_weight_to_the_scale(value):
    """Var = 0 and mean = the scale, on a Linear and a conv; it takes no gain and no mode."""
    layer, conv = nn.Linear(FAN_IN, FAN_OUT), nn.Conv2d(8, 16, 3)
    for module in (layer, conv):
        apply_init(module, "constant", scale=value)
        w = module.weight
        assert float(w.var()) < 1e-12 and float(w.mean()) == pytest.approx(value, rel=1e-6)
        assert torch.equal(w, torch.full_like(w, value))
        assert torch.count_nonzero(module.bias) == 0
    with pytest.raises(ValueError, match=r"init.scheme='constant' takes no gain, got init.gain=2"):
        apply_init(nn.Linear(4, 4), "constant", gain=2.0)
    with pytest.raises(ValueError, match=r"init.scheme='constant' takes no mode"):
        apply_init(nn.Linear(4, 4), "constant", mode="fan_in")
    with pytest.raises(ValueError, match=r"init.scale=0 is invalid"):
        apply_init(nn.Linear(4, 4), "constant", scale=0)


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
    ({"scheme": "nope"}, r"init.scheme='nope' is unknown; allowed: \['constant', 'default', 'he'"),
    ({"scheme": "xavier", "mode": "fan_mid"}, r"init.mode='fan_mid' is unknown"),
    ({"scheme": "xavier", "bias": "ones"}, r"init.bias='ones' is unknown"),
    ({"scheme": "xavier", "gain": -1}, r"init.gain=-1 is invalid"),
    ({"scheme": "xavier", "gain": "swish"}, r"init.gain='swish' is invalid.*activation name"),
])
def test_bad_init_values_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        apply_init(nn.Linear(2, 2), **kwargs)
