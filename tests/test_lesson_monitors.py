"""The lesson monitors (weights.json, gradient noise, train clock) and the learning-rate range
test (+tune=lr_find), on the tiny IDX fixture through the real training code; each number
against a recomputation with plain autograd on full tensors."""

from __future__ import annotations

import json
import math
import time

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from initlab.data.mnist import MEAN, STD
from initlab.monitors import GradientNoiseMonitor, WeightSummary
from initlab.monitors.evaluation import DISTINCT_CHUNK, count_distinct_rows
from initlab.train import ConfigError, build, run
from initlab.utils import weight_layers
from tests.helpers import fit, read_scalars

TINY_MLP_NO_DROPOUT = ("model=mlp", "model.dropout=0.0", "test=false")


# ----------------------------------------------------------------------------- WeightSummary

WEIGHTS = "+callbacks.weights._target_=initlab.monitors.WeightSummary"


def brute_force_distinct(rows: torch.Tensor, tolerance: float) -> int:
    """Greedy count with the whole (n, n, d) difference tensor: row i counts when no row j < i
    is within tolerance in max-abs difference."""
    dist = (rows.unsqueeze(1) - rows.unsqueeze(0)).abs().amax(-1)
    earlier = torch.ones(len(rows), len(rows)).tril(-1).bool()
    return int((~((dist <= tolerance) & earlier).any(1)).sum())


@pytest.mark.parametrize("scale", [0.5, 100.0])  # tolerance 1e-6 absolute, then 1e-6 * 100
def test_distinct_units_tolerance_is_relative_to_the_largest_weight_and_greedy(scale):
    torch.manual_seed(0)
    tol = 1e-6 * max(1.0, scale)
    base = (torch.rand(6) - 0.5) * scale
    base[0] = scale  # max|W| = scale
    step = torch.zeros(6)
    step[3] = 1.0
    rows = torch.stack([base,
                        base + 0.5 * tol * step,   # within tolerance of row 0: a clone
                        base + 2.0 * tol * step,   # beyond it: distinct
                        base + 2.7 * tol * step,   # within 0.7 tol of row 2: a clone
                        base + 3.4 * tol * step])  # 1.4 tol from row 2, 0.7 from row 3: a clone
    layer = nn.Linear(6, 5)
    with torch.no_grad():
        layer.weight.copy_(rows)
        layer.bias.zero_()
    summary, start = WeightSummary(distinct_tolerance=1e-6), {"layer": rows.clone()}
    model = nn.Sequential()
    model.add_module("layer", layer)
    assert summary.summarize(model, start)["layer"]["distinct_units"] == 2
    with torch.no_grad():  # the bias is part of a unit: equal weights, different bias
        layer.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 5 * tol]))
    assert summary.summarize(model, start)["layer"]["distinct_units"] == 3
    # tolerance 0: only exact copies are clones, and these rows all differ
    assert WeightSummary(distinct_tolerance=0.0).summarize(model, start)["layer"]["distinct_units"] == 5


def test_distinct_units_in_chunks_match_the_brute_force_count():
    torch.manual_seed(1)
    tol = 1e-3
    bases = torch.randn(137, 8)
    rows = bases[torch.randint(0, 137, (1000,))] + (torch.rand(1000, 8) - 0.5) * 0.6 * tol
    assert len(rows) > 3 * DISTINCT_CHUNK  # several chunks
    expected = brute_force_distinct(rows, tol)
    assert count_distinct_rows(rows, tol) == expected
    assert expected == len(torch.unique(bases, dim=0))  # each base once, its jittered copies not


@pytest.mark.parametrize("init", ["zeros", "constant"])
def test_zero_and_constant_init_keep_one_distinct_unit_per_hidden_layer(make_cfg, tmp_path, init):
    run(make_cfg(*TINY_MLP_NO_DROPOUT, f"init={init}", "optim=sgd", WEIGHTS,
                 "trainer.max_epochs=2"))
    stats = json.loads((tmp_path / "run" / "weights.json").read_text())
    assert stats["step"] == 6 and stats["near_zero_threshold"] == 1e-3
    assert stats["distinct_tolerance"] == 1e-6
    assert list(stats["layers"]) == ["fc1", "fc2", "out"]
    for name in ("fc1", "fc2"):
        assert stats["layers"][name]["units"] == 32
        assert stats["layers"][name]["distinct_units"] == 1, (init, name, stats["layers"][name])
    if init == "zeros":  # tanh(0) = 0: no weight gets a gradient, only the output bias
        for layer in stats["layers"].values():
            assert layer["change_rel"] is None and layer["change_l2"] == 0.0
            assert layer["near_zero_fraction"] == 1.0 and layer["weight_l1"] == 0.0
    else:
        assert stats["layers"]["fc1"]["change_rel"] > 0


def test_weights_json_matches_a_recomputation_from_the_weights(make_cfg, tmp_path):
    cfg = make_cfg(*TINY_MLP_NO_DROPOUT, "init=xavier", WEIGHTS, "trainer.max_epochs=2",
                   "+callbacks.weights.near_zero_threshold=0.01")
    datamodule, module, trainer = build(cfg)
    start = {n: m.weight.detach().clone() for n, m in weight_layers(module.model).items()}
    trainer.fit(module, datamodule=datamodule)
    stats = json.loads((tmp_path / "run" / "weights.json").read_text())
    assert stats["step"] == trainer.global_step == 6
    assert stats["near_zero_threshold"] == 0.01
    for name, layer in weight_layers(module.model).items():
        w, w0 = layer.weight.detach().double(), start[name].double()
        got = stats["layers"][name]
        assert got["units"] == w.shape[0] == got["distinct_units"]  # xavier: all distinct
        assert got["near_zero_fraction"] == pytest.approx(float((w.abs() < 0.01).double().mean()))
        assert got["weight_l1"] == pytest.approx(float(w.abs().sum()), rel=1e-9)
        assert got["weight_l2"] == pytest.approx(float(torch.sqrt((w * w).sum())), rel=1e-9)
        change = float(torch.sqrt(((w - w0) ** 2).sum()))
        assert got["change_l2"] == pytest.approx(change, rel=1e-9) and change > 0
        assert got["change_rel"] == pytest.approx(change / float(torch.sqrt((w0 * w0).sum())),
                                                  rel=1e-9)


@pytest.mark.parametrize("init", ["zeros", "constant"])
def test_weight_summary_scalars_are_logged_at_the_last_step(make_cfg, tmp_path, init):
    run(make_cfg(*TINY_MLP_NO_DROPOUT, f"init={init}", WEIGHTS, "logger=tensorboard"))
    scalars = read_scalars(tmp_path / "run")
    stats = json.loads((tmp_path / "run" / "weights.json").read_text())
    for name, layer in stats["layers"].items():
        assert scalars[f"weights/{name}/distinct_units"] == [(3, layer["distinct_units"])]
        for key in ("near_zero_fraction", "change_rel"):
            if layer[key] is None:  # null: not logged
                assert f"weights/{name}/{key}" not in scalars
            else:
                [(step, value)] = scalars[f"weights/{name}/{key}"]
                assert step == 3 and value == pytest.approx(layer[key], rel=1e-6)
    assert ("weights/fc1/change_rel" in scalars) == (init == "constant")


# ---------------------------------------------------------------------- GradientNoiseMonitor

NOISE = "+callbacks.noise._target_=initlab.monitors.GradientNoiseMonitor"


class RecordStep(L.Callback):
    """The batch and the weights each optimizer step starts from (appended after the monitor)."""

    def __init__(self):
        self.batches, self.weights = {}, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._batch = (batch[0].clone(), batch[1].clone())

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        step = trainer.global_step
        self.batches[step] = self._batch
        self.weights[step] = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}


def first_training_examples(datamodule, n):
    """The first n examples of the training split, standardised by hand."""
    x, y = datamodule.splits["train"]
    return ((x[:n].float() / 255).unsqueeze(1) - MEAN) / STD, y[:n]


def flat_grad(model, x, y) -> torch.Tensor:
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double()


def test_gradient_noise_cosine_matches_plain_autograd(make_cfg, tmp_path):
    cfg = make_cfg(*TINY_MLP_NO_DROPOUT, "init=xavier", "optim=sgd", "logger=tensorboard", NOISE,
                   "+callbacks.noise.num_examples=64", "+callbacks.noise.every_n_examples=64",
                   "+callbacks.noise.chunk_size=24")  # chunks of 24, 24, 16
    record = RecordStep()
    datamodule, module, trainer = fit(cfg, record)
    scalars = read_scalars(tmp_path / "run")
    logged = dict(scalars["grad_noise/cosine"])
    assert sorted(logged) == [0, 2]
    x_full, y_full = first_training_examples(datamodule, 64)
    model = module.model
    for step, cosine in logged.items():
        model.load_state_dict(record.weights[step])
        minibatch = flat_grad(model, *record.batches[step])
        full = flat_grad(model, x_full, y_full)
        expected = float(minibatch @ full / (minibatch.norm() * full.norm()))
        assert cosine == pytest.approx(expected, abs=1e-5), step
        assert dict(scalars["grad_noise/minibatch_norm"])[step] == pytest.approx(
            float(minibatch.norm()), rel=1e-5)
        assert dict(scalars["grad_noise/full_norm"])[step] == pytest.approx(
            float(full.norm()), rel=1e-5)
        assert abs(cosine) < 0.9999  # a minibatch of 32 is not the full gradient


def test_gradient_noise_with_the_whole_subset_as_batch_is_one(make_cfg, tmp_path):
    """Same 96 examples: the minibatch sums them shuffled, the monitor in split order and in
    chunks, so float32 rounding alone separates them (measured ~1e-7; allowed 1e-5)."""
    run(make_cfg(*TINY_MLP_NO_DROPOUT, "init=xavier", "logger=tensorboard", NOISE,
                 "data.batch_size=96", "+callbacks.noise.num_examples=4096",  # all 96
                 "+callbacks.noise.every_n_examples=1", "+callbacks.noise.chunk_size=40",
                 "trainer.max_epochs=2"))
    cosines = read_scalars(tmp_path / "run")["grad_noise/cosine"]
    assert [s for s, _ in cosines] == [0, 1]
    for _, cosine in cosines:
        assert cosine == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("batch_size,steps", [(32, [0, 2, 4, 6, 8]), (48, [0, 2, 3, 4])])
def test_gradient_noise_cadence_follows_examples_seen(make_cfg, tmp_path, batch_size, steps):
    """every 64 examples: batch 32 crosses a multiple every 2nd step; batch 48 at 96, 144
    and 192 examples (steps 2, 3, 4), not at 240 (step 5)."""
    run(make_cfg(*TINY_MLP_NO_DROPOUT, "logger=tensorboard", NOISE, f"data.batch_size={batch_size}",
                 "+callbacks.noise.num_examples=32", "+callbacks.noise.every_n_examples=64",
                 "trainer.max_epochs=3"))
    assert [s for s, _ in read_scalars(tmp_path / "run")["grad_noise/cosine"]] == steps


def test_gradient_noise_leaves_training_untouched(make_cfg, tmp_path):
    """Dropout on: the monitor's forward passes draw masks, yet the random state, p.grad and
    BatchNorm's running statistics are as without it, so the weights end bitwise equal."""
    final = []
    for extra in ([], [NOISE, "+callbacks.noise.every_n_examples=1"]):
        cfg = make_cfg("model=mlp", "model.dropout=0.5", "model.batchnorm=true", "test=false",
                       *extra, f"output_dir={tmp_path / str(len(extra))}")
        _, module, _ = fit(cfg)
        final.append(module.model.state_dict())
    assert final[0].keys() == final[1].keys()
    for key in final[0]:
        assert torch.equal(final[0][key], final[1][key]), key


def test_gradient_noise_bad_values_are_named():
    with pytest.raises(ValueError, match=r"GradientNoiseMonitor every_n_examples=0 is invalid"):
        GradientNoiseMonitor(every_n_examples=0)


# -------------------------------------------------------------------------------- TrainClock

class SlowValidation(L.Callback):
    def __init__(self, seconds: float):
        self.seconds, self.slept = seconds, 0.0

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            time.sleep(self.seconds)
            self.slept += self.seconds


def test_train_clock_excludes_validation(make_cfg, tmp_path):
    cfg = make_cfg(*TINY_MLP_NO_DROPOUT, "logger=tensorboard", "trainer.max_epochs=3",
                   "+callbacks.clock._target_=initlab.monitors.TrainClock",
                   "trainer.num_sanity_val_steps=1")
    slow = SlowValidation(0.2)
    begin = time.perf_counter()
    fit(cfg, slow)
    wall = time.perf_counter() - begin
    logged = read_scalars(tmp_path / "run")["time/train_s"]
    assert [s for s, _ in logged] == [3, 6, 9]  # one per validation, not the sanity check
    values = [v for _, v in logged]
    assert values == sorted(values) and values[0] > 0
    assert slow.slept >= 3 * 0.2
    assert values[-1] <= wall - slow.slept  # the sleeps are validation time


@pytest.mark.parametrize(("max_steps", "expected"), [(4, [3, 4]), (2, [2]), (6, [3, 6])])
def test_train_clock_also_logs_the_end_of_training_between_validations(make_cfg, tmp_path,
                                                                        max_steps, expected):
    cfg = make_cfg(*TINY_MLP_NO_DROPOUT, "logger=tensorboard", "trainer.max_epochs=3",
                   f"trainer.max_steps={max_steps}", "scheduler=none",  # one-cycle needs > 2 steps
                   "+callbacks.clock._target_=initlab.monitors.TrainClock")
    begin = time.perf_counter()
    fit(cfg)
    wall = time.perf_counter() - begin
    logged = read_scalars(tmp_path / "run")["time/train_s"]
    assert [s for s, _ in logged] == expected  # one point a step, the last at the last step
    assert 0 < logged[-1][1] <= wall


# --------------------------------------------------------------------------- +tune=lr_find

def test_lr_find_writes_its_curve_and_leaves_the_run_bitwise_unchanged(make_cfg, tmp_path):
    final = {}
    for name, extra in (("plain", []), ("tuned", ["+tune=lr_find", "tune.num_training=20"])):
        out = tmp_path / name
        cfg = make_cfg("model=mlp", "model.dropout=0.5", "test=false", "trainer.max_epochs=2",
                       *extra, f"output_dir={out}", outputs=True)
        run(cfg)
        state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu",
                           weights_only=False)["state_dict"]
        final[name] = state
        timings = json.loads((out / "result.json").read_text())["timings_s"]
        assert ("tune" in timings) == (name == "tuned")
    assert not (tmp_path / "plain" / "lr_find.json").exists()
    for key in final["plain"]:
        assert torch.equal(final["plain"][key], final["tuned"][key]), key
    record = json.loads((tmp_path / "tuned" / "lr_find.json").read_text())
    assert set(record) == {"lr", "loss", "suggestion", "applied", "min_lr", "max_lr",
                           "num_training"}
    assert 0 < len(record["lr"]) == len(record["loss"]) <= 20
    assert all(a < b for a, b in zip(record["lr"], record["lr"][1:]))
    assert record["lr"][0] == pytest.approx(1e-6) and record["applied"] is False
    assert (record["min_lr"], record["max_lr"], record["num_training"]) == (1e-6, 1.0, 20)
    assert not list((tmp_path / "tuned").glob(".lr_find_*"))  # its checkpoint is removed


@pytest.mark.parametrize("scheduler,key", [("none", "lr"), ("onecycle", "max_lr")])
def test_lr_find_apply_trains_with_the_suggestion(make_cfg, tmp_path, scheduler, key):
    """scheduler=none: the lr in effect is the suggestion; one-cycle: its peak is."""
    cfg = make_cfg("model=mlp", "optim=sgd", "test=false", f"scheduler={scheduler}",
                   "+tune=lr_find", "tune.num_training=30", "tune.apply=true", outputs=True)
    run(cfg)
    record = json.loads((tmp_path / "run" / "lr_find.json").read_text())
    assert record["applied"] is True and record["suggestion"] in record["lr"]
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu",
                      weights_only=False)
    groups = ckpt["optimizer_states"][0]["param_groups"]
    assert [g[key] for g in groups] == [record["suggestion"]] * len(groups)
    assert cfg.optim.lr == record["suggestion"]  # what the HParams tab shows


@pytest.mark.parametrize("override,message", [
    ("tune.min_lr=1.0", r"tune.max_lr=1.0 is invalid: it must be a number > tune.min_lr=1.0"),
    ("tune.min_lr=0", r"tune.min_lr=0 is invalid"),
    ("tune.mode=cosine", r"tune.mode='cosine' is unknown; allowed: \['exponential', 'linear'\]"),
    ("tune.num_training=0", r"tune.num_training=0 is invalid"),
    ("tune.early_stop_threshold=1", r"tune.early_stop_threshold=1 is invalid"),
    ("+tune.lr=3", r"tune has unknown keys \['lr'\]"),
])
def test_bad_tune_values_fail_before_training(make_cfg, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        run(make_cfg("+tune=lr_find", override))
    assert not (tmp_path / "run" / "lr_find.json").exists()


def test_lr_find_works_with_the_default_cnn_and_onecycle(make_cfg, tmp_path):
    run(make_cfg("+tune=lr_find", "tune.num_training=15", "tune.mode=linear", "test=false"))
    record = json.loads((tmp_path / "run" / "lr_find.json").read_text())
    assert len(record["lr"]) == len(record["loss"]) > 0
    lrs = record["lr"]  # Lightning's linear schedule: min_lr, then min_lr + (i + 1)/n of the span
    assert lrs[0] == pytest.approx(1e-6)
    assert lrs[2] - lrs[1] == pytest.approx(lrs[3] - lrs[2], rel=1e-6) == (1.0 - 1e-6) / 15
    assert math.isfinite(record["loss"][0])
