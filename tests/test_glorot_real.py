"""The paper's numbers as the oracle: tanh 5 x 1000 MLP on real MNIST at initialization."""

from __future__ import annotations

import json

import pytest

from initlab import project_root
from initlab.train import run
from tests.helpers import compose_config, read_events

pytestmark = pytest.mark.real_data
DATA = f"data.data_dir={project_root() / 'data'}"
HIDDEN = [f"fc{i}" for i in range(1, 6)]


@pytest.fixture(scope="module")
def init_stats(tmp_path_factory):
    stats = {}
    for scheme in ("standard", "xavier"):
        out = tmp_path_factory.mktemp(scheme)
        run(compose_config(
            DATA, f"output_dir={out}", "model=mlp", "model.activation=tanh", f"init={scheme}",
            "optim=sgd", "data.normalize=false", "callbacks=glorot", "trainer.max_steps=1",
            "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "logger=none",
            "checkpoint=null", "test=false"))
        stats[scheme] = json.loads((out / "init_stats.json").read_text())
    return stats


def layer_values(stats, key):
    return [stats["layers"][n][key] for n in HIDDEN]


def test_jacobian_mean_singular_value(init_stats):
    assert init_stats["standard"]["jacobian_mean_sv"] == pytest.approx(0.5, abs=0.1)
    assert init_stats["xavier"]["jacobian_mean_sv"] == pytest.approx(0.8, abs=0.1)


def test_activation_std_across_layers(init_stats):
    standard = layer_values(init_stats["standard"], "activation_std")
    xavier = layer_values(init_stats["xavier"], "activation_std")
    assert standard[0] / standard[-1] >= 3
    assert max(xavier) / min(xavier) <= 1.5


def test_backprop_std_across_layers(init_stats):
    standard = layer_values(init_stats["standard"], "backprop_std")
    xavier = layer_values(init_stats["xavier"], "backprop_std")
    assert standard[-1] / standard[0] >= 3
    assert max(xavier) / min(xavier) <= 1.5


def test_weight_gradient_std_is_level_under_both(init_stats):
    for scheme in ("standard", "xavier"):
        values = layer_values(init_stats[scheme], "weight_grad_std")
        assert max(values) / min(values) <= 1.5, (scheme, values)


def test_init_stats_records_the_run(init_stats):
    stats = init_stats["xavier"]
    assert (stats["model"], stats["init"], stats["activation"], stats["normalize"]) == (
        "initlab.models.MLP", "xavier", "tanh", False)
    assert stats["layers"]["fc1"]["fan_in"] == 784 and stats["layers"]["fc2"]["fan_out"] == 1000


def test_glorot_callbacks_write_every_tag_family_for_every_layer(make_cfg, tmp_path):
    run(make_cfg(DATA, "callbacks=glorot", "logger=tensorboard", "trainer.max_steps=60",
                 "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "test=false",
                 "checkpoint=null", tiny=False))
    events = read_events(tmp_path / "run")
    scalars, histograms = set(events.Tags()["scalars"]), set(events.Tags()["histograms"])
    hidden, every = ["conv1", "conv2", "fc1"], ["conv1", "conv2", "fc1", "out"]
    expected = {"grad_norm/total"}
    for layer in hidden:
        expected |= {f"activation/{layer}/{s}" for s in ("mean", "std", "p98", "saturated")}
        expected |= {f"preactivation/{layer}/std", f"backprop/{layer}/std",
                     f"jacobian/{layer}/mean_sv", f"jacobian/{layer}/rms_sv"}
    expected |= {f"jacobian/{layer}/mean_sv_stderr" for layer in ("conv1", "conv2")}  # estimated
    for layer in every:
        expected |= {f"grad_norm/{layer}", f"weight_grad/{layer}/std", f"update_ratio/{layer}",
                     f"weights/{layer}/fan_in_var", f"weights/{layer}/fan_out_var"}
    assert expected <= scalars, expected - scalars
    expected_hist = {f"hist/{k}/{n}" for k in ("activation", "backprop") for n in hidden}
    expected_hist |= {f"hist/weight_grad/{n}" for n in every}
    assert expected_hist <= histograms, expected_hist - histograms
    steps = [e.step for e in events.Scalars("activation/conv1/std")]
    assert steps == [0, 50, 60]  # step 0 before any update, every 50, and at the end
    assert [h.step for h in events.Histograms("hist/activation/fc1")] == [0, 60]


@pytest.mark.slow
def test_sigmoid_top_layer_saturates(make_cfg, tmp_path):
    run(make_cfg(DATA, "experiment=glorot_sigmoid", "logger=tensorboard",
                 "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "test=false",
                 "checkpoint=null", tiny=False))
    events = read_events(tmp_path / "run")
    final = {n: events.Scalars(f"activation/{n}/mean")[-1].value for n in ("fc1", "fc2", "fc3", "fc4")}
    assert final["fc4"] < 0.1, final
    assert min(final["fc1"], final["fc2"], final["fc3"]) > 0.5, final
