"""What a real run's events file holds: curves with only the points measured at their steps,
and an HParams record of the settings a user compares."""

from __future__ import annotations

import json

import pytest
from tensorboard.plugins.hparams import plugin_data_pb2

from initlab.loggers import SESSION_DIR
from initlab.train import run
from tests.helpers import read_events

COMPARE_FIRST = {"init", "init_gain", "optim", "lr", "activation", "model", "seed"}


def test_every_scalar_series_is_strictly_increasing_in_step(make_cfg, tmp_path):
    run(make_cfg("callbacks=default", "logger=tensorboard", "trainer.max_epochs=2"))
    events = read_events(tmp_path / "run")
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    tags = events.Tags()["scalars"]
    assert {"val/acc", "test/acc", "epoch", "activation/conv1/std", "grad_norm/total"} <= set(tags)
    for tag in tags:
        steps = [e.step for e in events.Scalars(tag)]
        assert all(a < b for a, b in zip(steps, steps[1:])), (tag, steps)
    # the HParams metrics have their own tags, at the last step, in the HParams session's folder
    assert not [t for t in tags if t.startswith("hparams/")]
    final = read_events(tmp_path / "run" / SESSION_DIR).Scalars("hparams/test_acc")
    assert [e.step for e in final] == [result["steps"]]
    assert final[0].value == pytest.approx(result["metrics"]["test/acc"])
    assert [e.step for e in events.Scalars("test/acc")] == [result["steps"]]
    assert events.Scalars("val/acc")[0].step > 0  # no step-0 point holding the final value


def test_hparams_columns_are_the_settings_a_user_compares(make_cfg, tmp_path):
    cfg = make_cfg("logger=tensorboard", "init=xavier", "init.gain=auto", "model.activation=tanh",
                   "optim=sgd", "optim.lr=0.05", "seed=7", "test=false")
    run(cfg)
    content = read_events(tmp_path / "run" / SESSION_DIR).PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]).session_start_info
    values = {k: v.string_value or v.number_value for k, v in start.hparams.items()}
    assert COMPARE_FIRST <= set(values)
    assert {k: values[k] for k in COMPARE_FIRST} == {
        "init": "xavier", "init_gain": pytest.approx(5 / 3), "optim": "SGD", "lr": 0.05,
        "activation": "tanh", "model": "CNN", "seed": 7}
    assert len(values) <= 25
    assert not any("_target_" in k or "." in str(v) and str(v).startswith(("torch", "initlab"))
                   for k, v in values.items())
    # no experiment summary, in the session or the run: TensorBoard infers the experiment from
    # all the sessions it sees (tests/test_hparams_tab.py); the session's scalars are its metrics
    assert "_hparams_/experiment" not in content
    with pytest.raises(KeyError):  # the run's own events hold no hparams plugin data
        read_events(tmp_path / "run").PluginTagToContent("hparams")
    session = read_events(tmp_path / "run" / SESSION_DIR)
    assert set(session.Tags()["scalars"]) == {"hparams/val_acc", "hparams/val_loss"}


@pytest.mark.parametrize(("callbacks", "robustness"),
                         [("none", "null"), ("default", "default"), ("glorot", "null")])
def test_every_custom_scalars_chart_has_a_curve(make_cfg, tmp_path, callbacks, robustness):
    """The Custom Scalars layout holds no chart empty by design: each chart's tag patterns
    match a scalar the run wrote (as TensorBoard matches them), with and without monitors and
    corrupted test sets."""
    import re

    from tensorboard.plugins.custom_scalar import layout_pb2

    overrides = [f"callbacks={callbacks}", "logger=tensorboard", "trainer.max_epochs=1"]
    if robustness == "null":
        overrides.append("robustness=null")
    run(make_cfg(*overrides))
    events = read_events(tmp_path / "run")
    config = events.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0]
    layout = layout_pb2.Layout.FromString(config)
    tags = events.Tags()["scalars"]
    charts = {chart.title: list(chart.multiline.tag) for category in layout.category
              for chart in category.chart}
    for title, patterns in charts.items():
        assert any(re.compile(p).match(t) for p in patterns for t in tags), title
    assert ("test accuracy under corruption" in charts) == (robustness != "null")
    assert ("activation std" in charts) == (callbacks != "none")
    assert ("test error during training (%)" in charts) == (callbacks == "glorot")
