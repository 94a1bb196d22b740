"""The oracle: every statistic the probe logs at step 0, recomputed from scratch.

For the paper's MLP (tanh, 5 x 1000, raw pixels, standard init) and the default CNN, a real run
(ProbeMonitor inside Lightning, on tiny data the tests write) is compared with a forward pass
written out here with torch.nn.functional, gradients by torch.autograd.grad, each example's
Jacobian by torch.autograd.functional.jacobian and its singular values by an eigensolver, on
full tensors of the same probe set. Checked: init_stats.json, every TensorBoard scalar at
step 0 and every step-0 histogram. Whoever adds a statistic adds its oracle here.
"""

from __future__ import annotations

import copy
import json

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from initlab import project_root
from initlab.monitors.callbacks import TAGS
from initlab.train import build
from tests.helpers import read_events

# acceptance: means and stds 1%, p98 2%, singular values 3% (relative)
TOLERANCE = {"activation_mean": 0.01, "activation_std": 0.01, "preactivation_std": 0.01,
             "backprop_std": 0.01, "weight_grad_std": 0.01, "weight_var": 0.01,
             "fan_in_var": 0.01, "fan_out_var": 0.01, "activation_p98": 0.02,
             "jacobian_mean_sv": 0.03, "jacobian_rms_sv": 0.03}
ACTIVATIONS = {"tanh": torch.tanh, "relu": F.relu}
CASES = {
    "mlp": ["model=mlp", "model.depth=5", "model.width=1000", "model.activation=tanh",
            "init=standard", "data.normalize=false", "optim=sgd"],
    "cnn": ["model=cnn", "model.channels=[24,32]", "model.kernel_sizes=[5,3]", "model.hidden=256"],
}
JACOBIAN_SAMPLES = 2  # the default CNN's conv2 Jacobian is 3200 x 13824 per example


@pytest.fixture(autouse=True)
def one_thread():
    """Eigensolvers of 1000-wide matrices stall for seconds when their threads share the cores
    with other processes; one thread is as fast on a 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mlp_layers(model, x, act):
    """[(name, s, a, input z, block z -> a)] of the hidden layers, and the logits."""
    layers, z = [], x.flatten(1)
    for i in range(1, model.depth + 1):
        fc = getattr(model, f"fc{i}")

        def block(v, fc=fc):
            return act(F.linear(v, fc.weight, fc.bias))

        s = F.linear(z, fc.weight, fc.bias)
        layers.append((f"fc{i}", s, act(s), z, block))
        z = layers[-1][2]
    return layers, F.linear(z, model.out.weight, model.out.bias)


def cnn_layers(model, x, act):
    c1, c2, fc = model.conv1, model.conv2, model.fc1

    def block1(v):
        return act(F.conv2d(v, c1.weight, c1.bias))

    def block2(v):
        return act(F.conv2d(F.max_pool2d(v, 2), c2.weight, c2.bias))

    def block3(v):
        return act(F.linear(F.max_pool2d(v, 2).flatten(1), fc.weight, fc.bias))

    s1 = F.conv2d(x, c1.weight, c1.bias)
    a1 = act(s1)
    s2 = F.conv2d(F.max_pool2d(a1, 2), c2.weight, c2.bias)
    a2 = act(s2)
    s3 = F.linear(F.max_pool2d(a2, 2).flatten(1), fc.weight, fc.bias)
    a3 = act(s3)
    logits = F.linear(a3, model.out.weight, model.out.bias)
    return [("conv1", s1, a1, x, block1), ("conv2", s2, a2, a1, block2),
            ("fc1", s3, a3, a2, block3)], logits


def singular_values(block, z: torch.Tensor) -> torch.Tensor:
    """All min(m, n) singular values of the block's Jacobian at each example of z."""
    svs = []
    for zi in z:
        jac = torch.autograd.functional.jacobian(lambda v: block(v.unsqueeze(0))[0], zi,
                                                 vectorize=True)
        jac = jac.reshape(-1, zi.numel()).double()
        count = min(jac.shape)
        # zero rows (dead units) and columns (inputs a max-pool drops) only add zero values
        jac = jac[jac.abs().sum(1) > 0][:, jac.abs().sum(0) > 0]
        gram = jac @ jac.T if jac.shape[0] <= jac.shape[1] else jac.T @ jac
        sv = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt()
        svs.append(torch.cat([sv, sv.new_zeros(count - len(sv))]))
    return torch.cat(svs)


def oracle(model, x, y, activation: str, samples: int):
    """{layer: {statistic: value}} and {histogram tag: tensor}, from scratch."""
    act = ACTIVATIONS[activation]
    layers, logits = (cnn_layers if hasattr(model, "conv1") else mlp_layers)(model, x, act)
    weighted = [(n, getattr(model, n)) for n, *_ in layers] + [("out", model.out)]
    grads = torch.autograd.grad(F.cross_entropy(logits, y),
                                [s for _, s, *_ in layers] + [m.weight for _, m in weighted])
    stats, tensors = {}, {}
    for (name, module), g in zip(weighted, grads[len(layers):]):
        w = module.weight
        receptive = w[0, 0].numel() if w.dim() == 4 else 1
        fan_in, fan_out = w.shape[1] * receptive, w.shape[0] * receptive
        stats[name] = {"weight_grad_std": g.std(), "weight_var": w.var(),
                       "fan_in_var": fan_in * w.var(), "fan_out_var": fan_out * w.var(),
                       "fan_in": fan_in, "fan_out": fan_out}
        tensors[f"hist/weight_grad/{name}"] = g
    for (name, s, a, z, block), g in zip(layers, grads[: len(layers)]):
        if activation == "relu":  # dead: <= 0 for every example (and position: per channel)
            saturated = (a.transpose(0, 1).flatten(1) <= 0).all(1).float().mean()
        else:
            saturated = (a.abs() > 0.97).float().mean()
        sv = singular_values(block, z[:samples].detach())
        stats[name].update({
            "activation_mean": a.mean(), "activation_std": a.std(),
            "activation_p98": torch.quantile(a.flatten(), 0.98),
            "activation_saturated": saturated, "preactivation_std": s.std(),
            "backprop_std": g.std(), "jacobian_mean_sv": sv.mean(),
            "jacobian_rms_sv": sv.pow(2).mean().sqrt()})
        tensors[f"hist/activation/{name}"], tensors[f"hist/backprop/{name}"] = a, g
    return ({n: {k: float(v) for k, v in d.items()} for n, d in stats.items()},
            {k: v.detach() for k, v in tensors.items()})


def run_at_init(make_cfg, tmp_path, case: str, real: bool):
    """Train one step with the default monitors and a TensorBoard logger; return the model as
    it was at step 0, the probe set, the run folder and the config."""
    data = [f"data.data_dir={project_root() / 'data'}", "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false", "checkpoint=null"] if real else []
    cfg = make_cfg(*data, *CASES[case], "callbacks=default", "logger=tensorboard",
                   f"callbacks.probe.jacobian_samples={JACOBIAN_SAMPLES}", "trainer.max_steps=1",
                   "test=false", "checkpoint=null", tiny=not real)
    datamodule, module, trainer = build(cfg)
    initial = copy.deepcopy(module.model)
    trainer.fit(module, datamodule=datamodule)
    x, y = datamodule.probe_batch(cfg.callbacks.probe.num_examples)
    return initial, x, y, tmp_path / "run", cfg


def close(got: float, exact: float, key: str, scale: float) -> bool:
    if key in ("fan_in", "fan_out"):
        return got == exact
    if key == "activation_saturated":
        return abs(got - exact) < 1e-6  # a count over all values: exact
    # a mean near 0 is compared on the scale of its std
    return abs(got - exact) <= TOLERANCE[key] * max(abs(exact), scale)


@pytest.mark.parametrize(("real", "case"), [
    (False, "mlp"),
    pytest.param(False, "cnn", marks=pytest.mark.slow),  # conv Jacobians by autograd: seconds
    pytest.param(True, "mlp", marks=pytest.mark.real_data),
    pytest.param(True, "cnn", marks=pytest.mark.real_data)])
def test_every_logged_statistic_matches_the_oracle(make_cfg, tmp_path, case, real):
    model, x, y, out, cfg = run_at_init(make_cfg, tmp_path, case, real)
    expected, tensors = oracle(model, x, y, cfg.model.activation, JACOBIAN_SAMPLES)
    init_stats = json.loads((out / "init_stats.json").read_text())
    assert init_stats["jacobian_samples"] == JACOBIAN_SAMPLES
    assert set(init_stats["layers"]) == set(expected)
    for layer, exact in expected.items():
        logged = init_stats["layers"][layer]
        statistics = set(logged) - {"jacobian_method", "jacobian_mean_sv_stderr"}
        assert statistics == set(exact), (layer, statistics ^ set(exact))
        for key, value in exact.items():
            scale = exact.get("activation_std", 0.0) if key == "activation_mean" else 0.0
            assert close(logged[key], value, key, scale), (layer, key, logged[key], value)
        if "jacobian_mean_sv_stderr" in logged:  # an estimate: its error bar covers the truth
            error = abs(logged["jacobian_mean_sv"] - exact["jacobian_mean_sv"])
            assert error <= 5 * logged["jacobian_mean_sv_stderr"] + 0.005 * exact["jacobian_mean_sv"]
    assert init_stats["jacobian_mean_sv"] == pytest.approx(
        np.mean([expected[n]["jacobian_mean_sv"] for n in expected if n != "out"]), rel=0.03)

    events = read_events(out)
    scalars = set(events.Tags()["scalars"])
    for layer, logged in init_stats["layers"].items():  # TensorBoard holds the same numbers
        for key, value in logged.items():
            if key in TAGS:
                first = events.Scalars(TAGS[key].format(layer))[0]
                assert first.step == 0 and first.value == pytest.approx(value, rel=1e-6)
    for tag in scalars:
        if tag.startswith(("activation/", "preactivation/", "backprop/", "weight_grad/",
                           "jacobian/", "weights/")):
            layer, key = tag.split("/")[1], next(k for k, t in TAGS.items()
                                                 if t.format(tag.split("/")[1]) == tag)
            assert key in init_stats["layers"][layer], tag  # no tag without its oracle

    assert set(events.Tags()["histograms"]) == set(tensors)
    for tag, values in tensors.items():
        hist = next(h.histogram_value for h in events.Histograms(tag) if h.step == 0)
        flat = values.flatten().double().numpy()
        assert hist.num == flat.size  # every value, not a sample
        assert (hist.min, hist.max) == pytest.approx((flat.min(), flat.max()), rel=1e-6)
        assert hist.sum == pytest.approx(flat.sum(), rel=1e-4, abs=1e-6 * np.abs(flat).sum())
        assert hist.sum_squares == pytest.approx((flat ** 2).sum(), rel=1e-4)
        counts, _ = np.histogram(flat, np.linspace(flat.min(), flat.max(), len(hist.bucket) + 1))
        assert np.abs(np.asarray(hist.bucket) - counts).sum() <= 1e-4 * flat.size + 4, tag


class _EpochOracle(L.Callback):
    """Before each training step, the batch's correct predictions and summed cross-entropy,
    recomputed with a plain forward pass of the same weights (no dropout in the tiny CNN)."""

    def __init__(self):
        self.per_epoch: dict[int, list[float]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        x, y = batch
        with torch.no_grad():
            logits = pl_module.model(x)
        sums = self.per_epoch.setdefault(trainer.current_epoch, [0.0, 0.0, 0])
        sums[0] += float((logits.argmax(1) == y).sum())
        sums[1] += float(F.cross_entropy(logits, y, reduction="sum"))
        sums[2] += len(y)


@pytest.mark.parametrize("batch_size", [32, 40])
def test_train_epoch_means_match_the_oracle(make_cfg, batch_size):
    """train/acc_epoch and train/loss_epoch are per-example means over the epoch's batches
    (40: batches of 40, 40 and 16 weigh by their sizes), each epoch its own: the second
    epoch's values are compared, after the first was logged and reset."""
    cfg = make_cfg(f"data.batch_size={batch_size}", "trainer.max_epochs=2", "robustness=null",
                   "test=false", "scheduler=none")
    datamodule, module, trainer = build(cfg)
    oracle = _EpochOracle()
    trainer.callbacks.append(oracle)
    trainer.fit(module, datamodule=datamodule)
    assert len(oracle.per_epoch) == 2
    correct, loss, n = oracle.per_epoch[1]
    assert n == 96
    final = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert final["train/acc_epoch"] == pytest.approx(correct / n, rel=1e-6)  # logged as float32
    assert final["train/loss_epoch"] == pytest.approx(loss / n, rel=1e-5)
    first_correct, first_loss, _ = oracle.per_epoch[0]
    assert (first_correct, first_loss) != (correct, loss)  # the epochs differ: a reset is tested


class _GradNormOracle(L.Callback):
    """Before each training step, each weight's gradient norm on the batch, by
    torch.autograd.grad of a plain cross-entropy (the tiny CNN has no dropout, l1 = l2 = 0)."""

    def __init__(self):
        self.per_step: dict[int, list[float]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        x, y = batch
        weights = [m.weight for m in pl_module.model.modules()
                   if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        grads = torch.autograd.grad(F.cross_entropy(pl_module.model(x), y), weights)
        self.per_step[trainer.global_step] = [float(g.double().norm()) for g in grads]


@pytest.mark.parametrize("every, log_every, kept", [(1, 2, 64), (3, 5, 64), (1, 5, 2)])
def test_grad_norms_match_the_oracle(make_cfg, tmp_path, monkeypatch, every, log_every, kept):
    """grad_norm/<layer> and grad_norm/total at each logging step: the mean, over the due steps
    since the last logging step, of each step's norms and of their total (kept=2: the pending
    norms are also summed between logging steps)."""
    from initlab.monitors import GradNormMonitor

    monkeypatch.setattr(GradNormMonitor, "_KEPT", kept)
    cfg = make_cfg("callbacks=none", "+callbacks.grad_norm._target_="
                   "initlab.monitors.GradNormMonitor",
                   f"+callbacks.grad_norm.every_n_steps={every}", "logger=tensorboard",
                   f"trainer.log_every_n_steps={log_every}", "data.batch_size=8",
                   "trainer.max_epochs=2", "robustness=null", "test=false", "scheduler=none")
    datamodule, module, trainer = build(cfg)
    oracle = _GradNormOracle()
    trainer.callbacks.append(oracle)
    trainer.fit(module, datamodule=datamodule)
    monitor = next(c for c in trainer.callbacks if isinstance(c, GradNormMonitor))
    assert len(monitor._pending) < kept  # summed as they reach the bound, not kept unbounded
    events = read_events(tmp_path / "run")
    layers = ["conv1", "conv2", "fc1", "out"]
    logged = [s.step for s in events.Scalars("grad_norm/total")]
    steps = sorted(oracle.per_step)
    assert logged == [s for s in steps if s % log_every == 0] and len(logged) >= 4
    previous = -1
    for step in logged:
        due = [s for s in steps if previous < s <= step and s % every == 0]
        previous = step
        rows = np.array([oracle.per_step[s] for s in due])
        expected = [*rows.mean(0), np.sqrt((rows ** 2).sum(1)).mean()]
        got = [next(e.value for e in events.Scalars(f"grad_norm/{n}") if e.step == step)
               for n in [*layers, "total"]]
        assert got == pytest.approx(expected, rel=1e-5), (step, due)
