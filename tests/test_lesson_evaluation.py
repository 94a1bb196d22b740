"""The lessons' extra evaluations (training accuracy measured as validation is, unit ablation)
and unequal MLP widths, on the tiny IDX fixture through the real training code; each number
against a recomputation by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from initlab.models import MLP
from tests.helpers import fit, read_scalars


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_train_subset_accuracy_is_the_eval_mode_accuracy_on_the_first_training_examples(make_cfg):
    cfg = make_cfg("model=mlp", "model.dropout=0.5", "test=false", "logger=tensorboard",
                   "+callbacks.train_eval._target_=initlab.monitors.TrainSubsetAccuracy",
                   "+callbacks.train_eval.num_examples=64", outputs=True)
    datamodule, module, trainer = fit(cfg)
    points = read_scalars(cfg.output_dir)["train_eval/acc"]
    assert [s for s, _ in points] == [trainer.global_step]  # one validation, at its step
    model = module.model.eval()  # dropout off, as in validation
    x, y = datamodule.train_subset(64)
    assert points[0][1] == pytest.approx(_accuracy(model, x, y), abs=1e-6)


def test_unit_ablation_matches_zeroing_each_unit_by_hand(make_cfg):
    cfg = make_cfg("test=false", "+callbacks.ablation._target_=initlab.monitors.UnitAblation",
                   "+callbacks.ablation.num_examples=80", "+callbacks.ablation.top_k=3",
                   "trainer.max_epochs=2", outputs=True)
    datamodule, module, trainer = fit(cfg)
    record = json.loads((Path(trainer.default_root_dir) / "ablation.json").read_text())
    model = module.model.eval()
    x, y = datamodule.probe_batch(80)
    base = _accuracy(model, x, y)
    assert record["base_acc"] == pytest.approx(base, abs=1e-6)
    units = model.out.in_features
    assert record["units"] == units == len(record["drop_points"])
    drops = []
    for unit in range(units):
        keep = torch.ones(units)
        keep[unit] = 0.0
        hook = model.out.register_forward_pre_hook(lambda mod, inp, keep=keep: (inp[0] * keep,))
        drops.append(100 * (base - _accuracy(model, x, y)))
        hook.remove()
    assert record["drop_points"] == pytest.approx(drops, abs=1e-3)
    assert record["max_drop_points"] == pytest.approx(max(drops), abs=1e-3)
    top = sorted(range(units), key=lambda u: -drops[u])[:3]
    keep = torch.ones(units)
    keep[top] = 0.0
    hook = model.out.register_forward_pre_hook(lambda mod, inp, keep=keep: (inp[0] * keep,))
    # ties in the ranking may pick other units of equal single drop: compare the joint drop
    # only when the top 3 are unambiguous
    if len({round(drops[u], 6) for u in top}) == 3 and \
            sorted(drops, reverse=True)[3] < drops[top[-1]] - 1e-6:
        assert record["top_k_drop_points"] == pytest.approx(100 * (base - _accuracy(model, x, y)),
                                                            abs=1e-3)
    hook.remove()


def test_mlp_widths_give_each_hidden_layer_its_own_size():
    model = MLP(depth=3, widths=[8, 4, 2], activation="linear", in_features=5)
    assert [m.weight.shape for m in (model.fc1, model.fc2, model.fc3, model.out)] == [
        (8, 5), (4, 8), (2, 4), (10, 2)]
    assert model(torch.randn(3, 5)).shape == (3, 10)
    with pytest.raises(ValueError, match="must list 3 integers"):
        MLP(depth=3, widths=[8, 4])
