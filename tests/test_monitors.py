"""Monitors: the statistics against direct computations, and the callbacks in real runs."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from initlab.init import apply_init
from initlab.models import CNN, MLP
from initlab.monitors.stats import jacobian_mean_sv, probe
from initlab.train import run


def test_probe_matches_direct_computation_and_leaves_grads_alone():
    torch.manual_seed(0)
    model = apply_init(MLP(depth=3, width=50, activation="tanh", dropout=0.5), "xavier")
    model.train()
    x, y = torch.randn(40, 1, 28, 28), torch.randint(0, 10, (40,))
    result = probe(model, x, y, "tanh")
    assert model.training and all(p.grad is None for p in model.parameters())

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
    assert float(stats["fc1"]["backprop_std"]) == pytest.approx(float(s1.grad.std()), rel=1e-4)
    assert float(stats["fc2"]["backprop_std"]) == pytest.approx(float(s2.grad.std()), rel=1e-4)
    assert float(stats["out"]["weight_grad_std"]) == pytest.approx(float(model.out.weight.grad.std()),
                                                                   rel=1e-4)
    assert float(stats["fc2"]["fan_in_var"]) == pytest.approx(50 * float(model.fc2.weight.var()))


def test_saturation_and_dead_units():
    model = MLP(depth=1, width=4, activation="relu")
    with torch.no_grad():
        model.fc1.weight.zero_()
        model.fc1.bias.copy_(torch.tensor([-1.0, -1.0, 1.0, -1.0]))  # 3 of 4 units dead
    result = probe(model, torch.randn(8, 784), torch.zeros(8, dtype=torch.long), "relu")
    assert float(result.scalars["fc1"]["activation_saturated"]) == 0.75


def exact_mean_sv(f, z: torch.Tensor) -> float:
    """Mean singular value of the Jacobian of f at each example, by autograd + SVD."""
    svs = [torch.linalg.svdvals(torch.autograd.functional.jacobian(f, zi.unsqueeze(0))
                                .reshape(-1, zi.numel())).mean() for zi in z]
    return float(torch.stack(svs).mean())


def test_fully_connected_jacobian_is_the_exact_svd():
    torch.manual_seed(0)
    model = apply_init(MLP(depth=2, width=30, activation="tanh", in_features=20), "xavier")
    x = torch.randn(6, 20)
    record = {}
    hooks = [act.register_forward_hook(lambda m, i, o, n=n: record.setdefault(n, {}).update(
        pre=i[0], act=o)) for n, _, act in model.hidden_layers()]
    hooks += [layer.register_forward_hook(lambda m, i, o, n=n: record.setdefault(n, {}).update(
        layer_in=i[0], layer_out=o)) for n, layer, _ in model.hidden_layers()]
    model(x)
    for h in hooks:
        h.remove()
    svs = jacobian_mean_sv(model, x, record)
    z1 = torch.tanh(model.fc1(x))
    assert float(svs["fc1"]) == pytest.approx(exact_mean_sv(lambda v: torch.tanh(model.fc1(v)), x),
                                              rel=1e-4)
    assert float(svs["fc2"]) == pytest.approx(exact_mean_sv(lambda v: torch.tanh(model.fc2(v)), z1),
                                              rel=1e-4)


def test_conv_jacobian_estimate_is_close_to_the_exact_rms():
    torch.manual_seed(0)
    model = apply_init(CNN(channels=(3, 4), hidden=8, activation="tanh"), "xavier")
    x = torch.randn(64, 1, 28, 28)
    result = probe(model, x, torch.zeros(64, dtype=torch.long), "tanh", jacobian_samples=None)
    f = lambda v: torch.tanh(model.conv1(v))  # noqa: E731
    exact_rms = []
    for xi in x[:8]:
        sv = torch.linalg.svdvals(torch.autograd.functional.jacobian(f, xi.unsqueeze(0))
                                  .reshape(-1, xi.numel()))
        exact_rms.append(sv.pow(2).mean().sqrt())
    exact = float(torch.stack(exact_rms).mean())
    assert float(result.scalars["conv1"]["jacobian_mean_sv"]) == pytest.approx(exact, rel=0.1)


def read_events(path) -> EventAccumulator:
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def test_monitors_work_without_a_logger(make_cfg, tmp_path):
    run(make_cfg("callbacks=glorot", "logger=none", "trainer.max_epochs=2"))
    stats = json.loads((tmp_path / "run" / "init_stats.json").read_text())
    assert set(stats["layers"]) == {"conv1", "conv2", "fc1", "out"}
    assert stats["layers"]["conv1"]["fan_in"] == 25 and stats["init"] == "default"


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
