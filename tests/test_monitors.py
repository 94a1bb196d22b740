"""Monitors: the statistics against direct computations, and the callbacks in real runs.

tests/test_oracles.py checks every logged step-0 statistic of real runs against plain autograd;
this module checks the pieces: percentiles, saturation, BatchNorm probes, the Jacobian methods.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from initlab.init import apply_init
from initlab.models import CNN, MLP
from initlab.monitors import ProbeMonitor
from initlab.monitors.stats import (
    QUANTILE_SAMPLE,
    JacobianConfig,
    _capture,
    _histogram_on_device,
    _histogram_on_host,
    _interpolation_bins_as_edges,
    _quantile_by_selection,
    finite_quantile,
    histogram,
    jacobian_sv,
    probe,
    probe_mode,
    saturated_fraction,
)
from initlab.train import run
from tests.helpers import read_events


def test_probe_matches_direct_computation_and_leaves_grads_alone():
    torch.manual_seed(0)
    model = apply_init(MLP(depth=3, width=50, activation="tanh", dropout=0.5), "xavier")
    model.train()
    x, y = torch.randn(40, 1, 28, 28), torch.randint(0, 10, (40,))
    rng = torch.get_rng_state()
    result = probe(model, x, y, "tanh", JacobianConfig(samples=4, method="slq"))
    assert model.training and all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)  # the global generator is not drawn from

    model.eval()  # the probe runs without dropout
    s1 = model.fc1(x.flatten(1))
    s1.retain_grad()
    a1 = torch.tanh(s1)
    s2 = model.fc2(a1)
    s2.retain_grad()
    a2 = torch.tanh(s2)
    a3 = torch.tanh(model.fc3(a2))
    F.cross_entropy(model.out(a3), y).backward()
    stats = result.scalars
    assert float(stats["fc1"]["activation_std"]) == pytest.approx(float(a1.std()), rel=1e-5)
    assert float(stats["fc2"]["activation_p98"]) == pytest.approx(float(a2.quantile(0.98)), rel=1e-5)
    assert float(stats["fc2"]["preactivation_std"]) == pytest.approx(float(s2.std()), rel=1e-5)
    assert float(stats["fc1"]["backprop_std"]) == pytest.approx(float(s1.grad.std()), rel=1e-4)
    assert float(stats["fc2"]["backprop_std"]) == pytest.approx(float(s2.grad.std()), rel=1e-4)
    assert float(stats["out"]["weight_grad_std"]) == pytest.approx(float(model.out.weight.grad.std()),
                                                                   rel=1e-4)
    assert float(stats["fc2"]["fan_in_var"]) == pytest.approx(50 * float(model.fc2.weight.var()))


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_p98_of_a_random_sample_is_within_1_percent_of_all_values(activation):
    torch.manual_seed(1)
    model = CNN(activation=activation).eval()
    # scale growing across the image, as in digits (blank borders): a strided sample, which
    # keeps the same pixel positions, would be biased
    x = torch.randn(300, 1, 28, 28) * torch.linspace(0, 3, 28)
    result = probe(model, x, torch.zeros(300, dtype=torch.long), activation)
    for layer in ("conv1", "conv2"):
        a = result.activations[layer]
        assert a.numel() > QUANTILE_SAMPLE  # sampled, not exact
        exact = float(torch.quantile(a.flatten(), 0.98))
        assert float(result.scalars[layer]["activation_p98"]) == pytest.approx(exact, rel=0.01)


def test_percentiles_and_histograms_count_only_finite_values():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, float("nan"), float("inf"), -float("inf")])
    generator = torch.Generator().manual_seed(0)
    assert float(finite_quantile(values, 0.5, generator)) == 2.5
    assert torch.isnan(finite_quantile(torch.full((3,), float("nan")), 0.98, generator))
    packed = histogram(values, bins=3).tolist()
    lo, hi, num, total, squares, *counts = packed
    assert (lo, hi, num, total, squares) == (1.0, 4.0, 4, 10.0, 30.0)
    assert counts == [1, 1, 2]  # [1, 2), [2, 3), [3, 4]
    assert histogram(torch.full((5,), float("nan")))[2] == 0  # nothing finite: count 0


def test_an_empty_histogram_is_skipped(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from initlab.monitors.callbacks import write_histogram

    writer = SummaryWriter(str(tmp_path))
    assert not write_histogram(writer, "hist/nan", histogram(torch.full((4,), float("nan"))).tolist(), 0)
    assert write_histogram(writer, "hist/some", histogram(torch.tensor([1.0, float("inf")])).tolist(), 0)
    writer.close()
    assert read_events(tmp_path).Tags()["histograms"] == ["hist/some"]


@pytest.mark.parametrize("size", [1, 2, 7, 19_600, 300_000])
def test_histogram_bins_every_value_as_numpy_does(size):
    """The host path (the CPU's) bins exactly as np.histogram, values on the edges included;
    the device path (an accelerator's, run here on the CPU) within edge rounding."""
    torch.manual_seed(size)
    t = torch.randn(size) * 3 + 1
    if size > 7:  # values exactly on interior edges (and the top edge): the cases rounding decides
        lo, hi = float(t.min()), float(t.max())
        edges = np.linspace(lo, hi, 65).astype(np.float32)
        t[:64] = torch.from_numpy(edges[1:])
    flat = t.double().numpy()
    lo, hi = flat.min(), flat.max()
    expected = (np.histogram(flat, bins=np.linspace(lo, hi, 65))[0] if hi > lo
                else np.eye(64)[0] * size)
    for path, tolerance in ((_histogram_on_host, 0), (_histogram_on_device, 2 + size // 10_000)):
        lo_, hi_, num, total, squares, *counts = path(t, 64).tolist()
        assert (lo_, hi_, num) == (lo, hi, size)
        assert total == pytest.approx(flat.sum()) and squares == pytest.approx((flat ** 2).sum())
        assert np.abs(np.asarray(counts) - expected).sum() <= tolerance, path.__name__
    assert histogram(t).tolist() == _histogram_on_host(t, 64).tolist()  # the CPU's path


def _as_numpy_bins(x: np.ndarray) -> np.ndarray:
    flat = x.astype(np.float64)
    return np.histogram(flat, np.linspace(flat.min(), flat.max(), 65))[0]


@pytest.mark.parametrize("lo, hi", [(0.0, 3.7), (0.0, 4.0), (-1.3, 2.9), (-2e-6, 5e-5),
                                    (-0.5, 0.5), (-218.03612, 218.03612), (-1.0, 1.0000001)])
def test_histogram_interpolates_only_where_it_bins_as_the_edges(lo, hi):
    """The host path interpolates a value's bin (torch.histc, 3x faster) only where that is
    proven to give the edge search's bin; a symmetric range puts an edge at 0, where float32 is
    dense and interpolation misbins a tiny negative value: there it searches the edges."""
    lo, hi = float(np.float32(lo)), float(np.float32(hi))
    edges = np.linspace(lo, hi, 65).astype(np.float32)
    rng = np.random.default_rng(0)
    x = np.concatenate([[lo, hi], edges, np.nextafter(edges, np.float32(np.inf)),
                        np.nextafter(edges, np.float32(-np.inf)), [-1e-45, 1e-45, -1e-30],
                        rng.uniform(lo, hi, 5000)]).astype(np.float32)
    x = x[(x >= lo) & (x <= hi)]
    values = torch.from_numpy(x).double()
    interpolated = torch.histc(values, 64, lo, hi).numpy()
    dense_zero_edge = lo == -hi or hi == np.nextafter(np.float32(-lo), np.float32(np.inf))
    assert _interpolation_bins_as_edges(lo, hi, 64) is not dense_zero_edge
    if lo == -hi:  # the case the guard exists for: interpolation alone misbins here
        assert not np.array_equal(interpolated, _as_numpy_bins(x))
    assert _histogram_on_host(torch.from_numpy(x), 64)[5:].numpy().tolist() == \
        _as_numpy_bins(x).tolist()


def test_histogram_of_wider_floats_searches_the_edges():
    """The interpolation proof covers float32 values; a float64 tensor is binned by the edges."""
    lo, hi = -0.15405166149139404, 1.004311203956604  # float32 values
    edge = float(torch.linspace(lo, hi, 65, dtype=torch.float64)[10])
    below = np.nextafter(np.nextafter(np.nextafter(edge, -1.0), -1.0), -1.0)  # not a float32
    x = torch.tensor([lo, below, hi], dtype=torch.float64)
    assert _interpolation_bins_as_edges(lo, hi, 64)  # for float32 values it would be
    assert torch.histc(x, 64, lo, hi)[10] == 1  # interpolation puts it past the edge
    assert _histogram_on_host(x, 64)[5:].numpy().tolist() == _as_numpy_bins(x.numpy()).tolist()


def test_histogram_paths_skip_non_finite_values_alike():
    t = torch.randn(1000)
    t[[3, 500, 999]] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    host, device = _histogram_on_host(t, 16), _histogram_on_device(t, 16)
    assert host[2] == device[2] == 997
    assert host[:2].tolist() == device[:2].tolist()
    assert np.abs((host[5:] - device[5:]).numpy()).sum() <= 2


@pytest.mark.parametrize("sample", [1_000, 4_096])
def test_a_sampled_quantile_is_the_one_of_a_plain_draw_and_leaves_the_generator_alike(sample):
    """The sample's indices are kept and sorted; the quantile, and the generator's state after
    (what the Lanczos vectors are drawn from next), are those of a plain unsorted draw, the
    first time and every later time the same state asks."""
    torch.manual_seed(sample)
    values = torch.randn(3, 5, 997)  # 14,955 values: sampled
    values[0, 0, :5] = torch.tensor([float("nan"), float("inf"), -float("inf"), 7.0, -7.0])
    for rep in range(3):  # the first call draws; the later ones find it kept
        for seed in (0, 1):
            plain = torch.Generator().manual_seed(seed)
            drawn = values.flatten()[torch.randint(values.numel(), (sample,), generator=plain)]
            expected = torch.nanquantile(torch.where(torch.isfinite(drawn), drawn, torch.nan), 0.98)
            generator = torch.Generator().manual_seed(seed)
            got = finite_quantile(values, 0.98, generator, sample=sample)
            assert got.item() == expected.item(), (rep, seed)
            assert torch.equal(generator.get_state(), plain.get_state()), (rep, seed)
            assert torch.equal(torch.rand(4, generator=generator), torch.rand(4, generator=plain))


@pytest.mark.parametrize("size", [1, 2, 3, 17, 100, 1001, 65_537])
def test_quantile_by_selection_is_nanquantile_bit_for_bit(size):
    torch.manual_seed(size)
    values = torch.randn(size)
    if size > 3:
        values[:3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    finite = torch.where(torch.isfinite(values), values, torch.nan)
    for q in (0.0, 0.02, 0.5, 0.98, 0.999, 1.0):
        expected = torch.nanquantile(finite, q)
        assert _quantile_by_selection(values, q).item() == expected.item(), q


def test_saturation_and_dead_units():
    model = MLP(depth=1, width=4, activation="relu")
    with torch.no_grad():
        model.fc1.weight.zero_()
        model.fc1.bias.copy_(torch.tensor([-1.0, -1.0, 1.0, -1.0]))  # 3 of 4 units dead
    result = probe(model, torch.randn(8, 784), torch.zeros(8, dtype=torch.long), "relu")
    assert float(result.scalars["fc1"]["activation_saturated"]) == 0.75


@pytest.mark.parametrize("channels_last", [False, True])
def test_dead_fraction_counts_a_nan_as_alive_in_either_memory_format(channels_last):
    a = torch.rand(5, 6, 4, 4) - 0.5  # every channel has positive values
    a[:, 1] = 0  # dead
    a[:, 2] = 0
    a[3, 2, 1, 1] = float("nan")  # zeros and a NaN: not dead
    a[:, 4] = float("nan")  # all NaN: not dead
    if channels_last:
        a = a.contiguous(memory_format=torch.channels_last)
    definition = (a.transpose(0, 1).flatten(1) <= 0).all(1).float().mean()
    assert float(saturated_fraction(a, "relu")) == float(definition) == pytest.approx(1 / 6)
    dense = torch.rand(7, 5) + 0.1
    dense[:, 0] = 0
    assert float(saturated_fraction(dense, "relu")) == pytest.approx(1 / 5)


@pytest.mark.parametrize("rows", [1, 3, 64, 96, 100, 4096 + 5])  # folds: 1, 1, 64, 32, 4, 1
@pytest.mark.parametrize("channels_last", [False, True])
def test_dead_fraction_is_the_definition_whatever_the_rows_fold_by(rows, channels_last):
    """The reduction folds rows side by side by gcd(rows, 64): every fold gives the definition
    (every value <= 0, a NaN not), a dead channel or unit found wherever its rows lie."""
    torch.manual_seed(rows)
    a = torch.rand(rows, 7, 1, 1) + 0.1  # alive: 0 and 3
    a[:, [1, 2, 4]] = -a[:, [1, 2, 4]]  # dead: 1 and 4
    a[-1, 2] = float("nan")  # negative values and a NaN: alive
    a[:, 5:] = 0.0  # zeros: dead
    a[rows // 2, 6] = 1e-30  # zeros and one value above 0 wherever its row lies: alive
    if channels_last:
        a = a.contiguous(memory_format=torch.channels_last)
    definition = (a.transpose(0, 1).flatten(1) <= 0).all(1).float().mean()
    assert float(definition) == pytest.approx(3 / 7)
    assert float(saturated_fraction(a, "relu")) == float(definition)
    assert float(saturated_fraction(a.flatten(1), "leaky_relu")) == float(definition)  # dense


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_conv_dead_fraction_is_per_channel(activation):
    torch.manual_seed(0)
    model = CNN(channels=(6, 4), hidden=8, activation=activation)
    with torch.no_grad():
        model.conv1.bias[:2] = -100.0  # channels 0 and 1: negative everywhere
        model.conv1.weight[2].zero_()
        model.conv1.bias[2] = 0.0  # channel 2: exactly 0 everywhere, dead too
    x = torch.randn(20, 1, 28, 28)
    result = probe(model, x, torch.zeros(20, dtype=torch.long), activation)
    s = model.conv1(x)
    per_channel = (s <= 0).transpose(0, 1).flatten(1).all(1)
    assert per_channel.tolist() == [True, True, True, False, False, False]
    assert (s[:, 3:] <= 0).any()  # live channels have dead positions: not counted
    assert float(result.scalars["conv1"]["activation_saturated"]) == pytest.approx(3 / 6)


@pytest.mark.parametrize("activation, saturated", [
    ("tanh", lambda a: a.abs() > 0.97), ("softsign", lambda a: a.abs() > 0.97),
    ("sigmoid", lambda a: (a < 0.03) | (a > 0.97)), ("elu", lambda a: a < -0.97),
])
def test_saturated_fraction_of_bounded_activations(activation, saturated):
    torch.manual_seed(0)
    model = apply_init(MLP(depth=2, width=64, activation=activation), "normal", scale=5)
    x = torch.randn(30, 784)
    result = probe(model, x, torch.zeros(30, dtype=torch.long), activation)
    for layer in ("fc1", "fc2"):
        a = result.activations[layer]
        expected = float(saturated(a).float().mean())
        assert 0.05 < expected < 1  # a case that can fail
        assert float(result.scalars[layer]["activation_saturated"]) == pytest.approx(expected)


def test_linear_never_saturates():
    model = MLP(depth=1, width=8, activation="linear")
    result = probe(model, torch.randn(5, 784) * 100, torch.zeros(5, dtype=torch.long), "linear")
    assert float(result.scalars["fc1"]["activation_saturated"]) == 0


@pytest.mark.parametrize("model_name", ["cnn", "mlp"])
@pytest.mark.parametrize("init", ["default", "standard", "xavier", "normal"])
def test_batchnorm_probe_normalises_with_batch_statistics(model_name, init):
    torch.manual_seed(0)
    if model_name == "cnn":  # the CNN normalises its conv layers (fc1 has no BatchNorm)
        model = CNN(channels=(6, 8), hidden=16, activation="tanh", batchnorm=True, dropout=0.5)
        normalised = ["conv1", "conv2"]
    else:
        model = MLP(depth=3, width=64, activation="tanh", batchnorm=True, dropout=0.5)
        normalised = ["fc1", "fc2", "fc3"]
    apply_init(model, init)
    model.train()
    buffers = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "tracked" in k}
    x = torch.rand(64, 1, 28, 28) * 3
    result = probe(model, x, torch.zeros(64, dtype=torch.long), "tanh", JacobianConfig(samples=2))
    for layer in normalised:
        assert float(result.scalars[layer]["preactivation_std"]) == pytest.approx(1.0, abs=0.01)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in buffers.items())  # running stats untouched
    assert model.training
    if init == "normal":  # eval mode (the running statistics: identity at init) is far from 1
        model.eval()
        first = model.conv1(x) if model_name == "cnn" else model.fc1(x.flatten(1))
        assert float(model.bn1(first).std()) > 2


def hand_jacobian_svs(f, z: torch.Tensor) -> torch.Tensor:
    """Singular values of the Jacobian of f at each example of z: plain autograd + svdvals."""
    svs = []
    for zi in z:
        jac = torch.autograd.functional.jacobian(lambda v: f(v.unsqueeze(0))[0], zi)
        svs.append(torch.linalg.svdvals(jac.reshape(-1, zi.numel()).double()))
    return torch.stack(svs)


def block_inputs(model, x):
    with probe_mode(model):
        record, batch_stats, handles = _capture(model)
        with torch.no_grad():
            model(x)
        for h in handles:
            h.remove()
    names = list(record)
    return names, [x] + [record[n]["act"] for n in names[:-1]], batch_stats, record


def small_models():
    torch.manual_seed(0)
    mlp = apply_init(MLP(depth=2, width=30, activation="tanh", in_features=20), "xavier")
    cnn = apply_init(CNN(channels=(3, 4), hidden=8, activation="relu", image_size=16), "he")
    bn = apply_init(CNN(channels=(3, 4), hidden=8, activation="tanh", batchnorm=True,
                        image_size=16), "xavier")
    return {
        "mlp": (mlp, torch.randn(6, 20), lambda m: [
            lambda v: torch.tanh(m.fc1(v)), lambda v: torch.tanh(m.fc2(v))]),
        "cnn": (cnn, torch.randn(6, 1, 16, 16), lambda m: [
            lambda v: F.relu(m.conv1(v)), lambda v: F.relu(m.conv2(F.max_pool2d(v, 2))),
            lambda v: F.relu(m.fc1(F.max_pool2d(v, 2).flatten(1)))]),
        "cnn_batchnorm": (bn, torch.randn(6, 1, 16, 16), None),
    }


@pytest.mark.parametrize("name", ["mlp", "cnn", "cnn_batchnorm"])
def test_exact_jacobian_is_the_svd_of_the_autograd_jacobian(name):
    model, x, blocks = small_models()[name]
    names, inputs, batch_stats, record = block_inputs(model, x)
    if blocks is None:  # BatchNorm with the probe batch's statistics, held fixed
        def bn(v, norm, mean, var):
            shape = (1, -1, 1, 1)
            return ((v - mean.view(shape)) / (var.view(shape) + norm.eps).sqrt()
                    * norm.weight.view(shape) + norm.bias.view(shape))

        def batch_stats_of(v):
            return v.mean((0, 2, 3)), v.var((0, 2, 3), unbiased=False)

        with torch.no_grad():
            s1 = model.conv1(x)
            stats1 = batch_stats_of(s1)
            s2 = model.conv2(F.max_pool2d(torch.tanh(bn(s1, model.bn1, *stats1)), 2))
            stats2 = batch_stats_of(s2)
        blocks = [lambda v: torch.tanh(bn(model.conv1(v), model.bn1, *stats1)),
                  lambda v: torch.tanh(bn(model.conv2(F.max_pool2d(v, 2)), model.bn2, *stats2)),
                  lambda v: torch.tanh(model.fc1(F.max_pool2d(v, 2).flatten(1)))]
    else:
        blocks = blocks(model)
    model.eval()
    for k, (layer, f) in enumerate(zip(names, blocks)):
        sv = hand_jacobian_svs(f, inputs[k])
        with probe_mode(model):
            got, method = jacobian_sv(model, x, k, inputs[k], JacobianConfig(method="exact"),
                                      torch.Generator(), batch_stats)
        assert method == "exact"
        assert float(got["jacobian_mean_sv"]) == pytest.approx(float(sv.mean()), rel=1e-4), layer
        assert float(got["jacobian_rms_sv"]) == pytest.approx(float(sv.pow(2).mean().sqrt()),
                                                              rel=1e-4), layer


@pytest.mark.parametrize("model_name, samples, layers", [
    ("cnn", 6, ["conv1", "fc1"]), ("cnn", 2, ["conv2"]), ("mlp", 6, ["fc1", "fc2", "fc3"])])
def test_slq_estimate_is_within_3_percent_of_the_exact_mean(model_name, samples, layers):
    torch.manual_seed(0)
    if model_name == "cnn":
        model, x = apply_init(CNN(channels=(8, 16), hidden=64), "default"), torch.randn(40, 1, 28, 28)
    else:
        model, x = apply_init(MLP(depth=3, width=300, activation="tanh"), "standard"), torch.rand(40, 784)
    names, inputs, batch_stats, _ = block_inputs(model, x)
    for layer in layers:
        k = names.index(layer)
        z = inputs[k][:samples]
        exact, _ = jacobian_sv(model, x[:samples], k, z, JacobianConfig(method="exact"),
                               torch.Generator(), batch_stats)
        estimate, method = jacobian_sv(model, x[:samples], k, z, JacobianConfig(method="slq"),
                                       torch.Generator().manual_seed(0), batch_stats)
        assert method == "slq"
        truth, got = float(exact["jacobian_mean_sv"]), float(estimate["jacobian_mean_sv"])
        stderr = float(estimate["jacobian_mean_sv_stderr"])
        assert 0 < stderr < 0.02 * truth, layer
        assert got == pytest.approx(truth, rel=0.03), layer
        assert abs(got - truth) < 5 * stderr + 0.005 * truth, layer  # the error bar is honest
        assert float(estimate["jacobian_rms_sv"]) == pytest.approx(float(exact["jacobian_rms_sv"]),
                                                                   rel=0.03), layer


def test_auto_method_picks_exact_for_small_jacobians():
    torch.manual_seed(0)
    model = CNN(channels=(8, 16), hidden=64)
    x = torch.randn(4, 1, 28, 28)
    result = probe(model, x, torch.zeros(4, dtype=torch.long), "relu", JacobianConfig(samples=2))
    # entries of J against the default 1M: conv1 8*24*24 x 784 = 3.6M, conv2 16*10*10 x 8*24*24
    # = 7.4M, fc1 64 x 16*5*5 = 26k
    assert result.jacobian_method == {"conv1": "slq", "conv2": "slq", "fc1": "exact"}
    assert "jacobian_mean_sv_stderr" in result.scalars["conv1"]
    assert "jacobian_mean_sv_stderr" not in result.scalars["fc1"]


def test_diverged_weights_give_nan_not_an_error():
    model = CNN(channels=(3, 4), hidden=8, activation="tanh")
    with torch.no_grad():
        model.conv2.weight[0, 0, 0, 0] = float("nan")
        model.fc1.weight[0, 0] = float("inf")
    x = torch.randn(6, 1, 28, 28)
    for method in ("exact", "slq"):
        result = probe(model, x, torch.zeros(6, dtype=torch.long), "tanh",
                       JacobianConfig(samples=2, method=method))
        assert torch.isnan(result.scalars["fc1"]["jacobian_mean_sv"])
        assert torch.isfinite(result.scalars["conv1"]["jacobian_mean_sv"])


@pytest.mark.parametrize("key, value", [
    ("jacobian_method", "svd"), ("jacobian_probes", 1), ("jacobian_lanczos_steps", 0),
    ("jacobian_samples", -1), ("jacobian_max_exact", -1)])
def test_bad_jacobian_settings_name_the_key(key, value):
    with pytest.raises(ValueError, match=f"callbacks.probe.{key}={value!r} is invalid"):
        ProbeMonitor(**{key: value})


def test_jacobians_can_be_turned_off(make_cfg, tmp_path):
    run(make_cfg("callbacks=glorot", "callbacks.probe.jacobian_samples=0"))
    stats = json.loads((tmp_path / "run" / "init_stats.json").read_text())
    assert stats["jacobian_samples"] == 0 and stats["jacobian_mean_sv"] is None
    assert not any(k.startswith("jacobian") for k in stats["layers"]["conv1"])


def test_bad_jacobian_setting_fails_before_training(make_cfg):
    with pytest.raises(Exception, match="callbacks.probe.jacobian_probes=1 is invalid"):
        run(make_cfg("callbacks=default", "callbacks.probe.jacobian_probes=1"))


def test_monitors_work_without_a_logger(make_cfg, tmp_path):
    run(make_cfg("callbacks=glorot", "logger=none", "trainer.max_epochs=2"))
    stats = json.loads((tmp_path / "run" / "init_stats.json").read_text())
    assert set(stats["layers"]) == {"conv1", "conv2", "fc1", "out"}
    assert stats["layers"]["conv1"]["fan_in"] == 25 and stats["init"] == "default"
    methods = {n: stats["layers"][n]["jacobian_method"] for n in ("conv1", "conv2", "fc1")}
    assert methods == {"conv1": "slq", "conv2": "slq", "fc1": "exact"}
    # the summary averages one quantity: each layer's mean singular value
    assert stats["jacobian_mean_sv"] == pytest.approx(
        sum(stats["layers"][n]["jacobian_mean_sv"] for n in methods) / 3)


def test_update_ratio_is_measured_from_the_parameters(make_cfg, tmp_path):
    ratios = {}
    for lr in (0.01, 0.001):
        out = tmp_path / f"lr{lr}"
        run(make_cfg("optim=sgd", f"optim.lr={lr}", "scheduler=none", "callbacks=default",
                     "callbacks.update_ratio.every_n_steps=1", "logger=tensorboard",
                     f"output_dir={out}", "test=false"))
        ratios[lr] = read_events(out).Scalars("update_ratio/conv1")[0]
    assert ratios[0.01].step == ratios[0.001].step == 0
    # same first batch and gradient: ten times the step size is log10(10) = 1 higher
    assert ratios[0.01].value - ratios[0.001].value == pytest.approx(1.0, abs=1e-3)


def test_grad_norm_total_is_the_norm_of_the_layers(make_cfg, tmp_path):
    run(make_cfg("callbacks=default", "logger=tensorboard", "trainer.log_every_n_steps=1",
                 "test=false"))
    events = read_events(tmp_path / "run")
    layers = ["conv1", "conv2", "fc1", "out"]
    for step in range(3):
        parts = [events.Scalars(f"grad_norm/{n}")[step].value for n in layers]
        total = events.Scalars("grad_norm/total")[step].value
        assert total == pytest.approx(sum(p * p for p in parts) ** 0.5, rel=1e-5)
        assert min(parts) > 0
