"""The model contract (initlab.models.contract): a model that lacks a piece fails when a fit
starts, naming the piece; initlab's models satisfy it; and the monitors and the report work on a
model whose layers are named unlike initlab's (no fc<i>, no out), so no layer name is built in."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf
from torch import nn

from initlab.models import CNN, MLP, MonitoredModel, check_model_contract
from initlab.models.activations import make_activation
from initlab.report import Run, write_report
from initlab.report.lessons import dropout, naive_init, symmetry, vanishing, xavier_variants
from initlab.train import build, run
from tests.helpers import read_events


class Renamed(nn.Module):
    """An MLP whose layers are ``blocks.<i>`` (activations ``squash.<i>``) and ``head``; it
    takes the MLP config's keys."""

    def __init__(self, depth=3, width=16, widths=None, activation="tanh", dropout=0.0,
                 batchnorm=False, in_features=784, num_classes=10):
        super().__init__()
        widths = list(widths or [width] * depth)
        self.activation = activation
        self.blocks = nn.ModuleList(nn.Linear(n, m) for n, m in zip([in_features, *widths], widths))
        self.squash = nn.ModuleList(make_activation(activation) for _ in widths)
        self.head = nn.Linear(widths[-1], num_classes)

    data_kwargs = staticmethod(MLP.data_kwargs)

    def hidden_layers(self):
        return [(f"blocks.{i}", layer, act)
                for i, (layer, act) in enumerate(zip(self.blocks, self.squash))]

    @property
    def output_layer(self):
        return self.head

    def forward(self, x):
        x = x.flatten(1)
        for layer, act in zip(self.blocks, self.squash):
            x = act(layer(x))
        return self.head(x)


class NoHiddenLayers(Renamed):
    hidden_layers = None


class NoActivation(Renamed):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        del self.activation


class UnknownActivation(Renamed):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.activation = "swish"


class NoOutputLayer(Renamed):
    output_layer = None


class OutputNotAWeightLayer(Renamed):
    @property
    def output_layer(self):
        return self.squash[-1]


class HiddenMisnamed(Renamed):
    def hidden_layers(self):
        return [(f"fc{i + 1}", layer, act) for i, (_, layer, act) in enumerate(super().hidden_layers())]


class HiddenOutOfOrder(Renamed):
    def hidden_layers(self):
        return super().hidden_layers()[::-1]


class OutputDefinedFirst(Renamed):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        blocks, squash = self.blocks, self.squash
        del self.blocks, self.squash
        self.blocks, self.squash = blocks, squash  # registered again: after the head


def _tiny(make_cfg, model: str, *extra: str, outputs: bool = False):
    return make_cfg("model=mlp", f"model._target_=tests.test_contract.{model}", "model.depth=3",
                    "model.width=16", *extra, outputs=outputs)


@pytest.mark.parametrize("model, missing", [
    ("NoHiddenLayers", r"model NoHiddenLayers has no hidden_layers\(\) method"),
    ("NoActivation", r"model NoActivation has no `activation` attribute"),
    ("UnknownActivation", r"has activation='swish', not one of \['elu', 'leaky_relu', "),
    ("NoOutputLayer", r"model NoOutputLayer has no `output_layer` attribute"),
    ("OutputNotAWeightLayer", r"has output_layer=Tanh, not a Conv/Linear layer of the model"),
    ("HiddenMisnamed", r"lists hidden layer 'fc1' whose weight layer is not the model's "
                       r"Conv/Linear layer of that name \(the model's are \['blocks.0', "),
    ("HiddenOutOfOrder", r"the hidden layers \['blocks.2', 'blocks.1', 'blocks.0'\] must come in "
                         r"that order, then the output layer 'head' last"),
    ("OutputDefinedFirst", r"defines its weight layers in the order \['head', 'blocks.0', "),
])
def test_a_model_missing_a_piece_fails_when_the_fit_starts_naming_it(make_cfg, model, missing):
    datamodule, module, trainer = build(_tiny(make_cfg, model))  # building does not check
    with pytest.raises(ValueError, match=missing) as err:
        trainer.fit(module, datamodule=datamodule)
    assert "The model contract: hidden_layers() -> [(name, weight layer, activation module)]" \
        in str(err.value)
    assert trainer.global_step == 0  # before any training step


@pytest.mark.parametrize("model", [MLP(depth=3, width=8), CNN(channels=(4, 8), hidden=16),
                                   Renamed()])
def test_initlabs_models_and_a_renamed_one_satisfy_the_contract(model):
    check_model_contract(model)
    assert isinstance(model, MonitoredModel)
    names = dict(model.named_modules())
    for name, layer, _ in model.hidden_layers():
        assert names[name] is layer
    assert model.output_layer is list(names.values())[-1]  # defined last


def test_monitors_and_report_work_on_a_model_with_other_layer_names(make_cfg, tmp_path):
    cfg = _tiny(make_cfg, "Renamed", "callbacks=lesson", "callbacks.probe.every_n_steps=1",
                "callbacks.probe.jacobian_samples=4", "callbacks.probe.histogram_every_n_steps=1",
                "+callbacks.ablation._target_=initlab.monitors.UnitAblation",
                "+callbacks.ablation.num_examples=50", "model.activation=relu", "init=xavier",
                "logger=tensorboard", "checkpoint=null", "test=false", outputs=True)
    run(cfg)
    out = tmp_path / "run"
    result = json.loads((out / "result.json").read_text())
    hidden = ["blocks.0", "blocks.1", "blocks.2"]

    init_stats = json.loads((out / "init_stats.json").read_text())
    assert list(init_stats["layers"]) == [*hidden, "head"]
    for name in hidden:  # activation statistics and Jacobians on the contract's hidden layers
        assert {"activation_std", "activation_saturated", "jacobian_mean_sv"} <= set(
            init_stats["layers"][name])
    assert "activation_std" not in init_stats["layers"]["head"]
    ablation = json.loads((out / "ablation.json").read_text())
    assert ablation["units"] == 16  # the head's input: the last hidden layer's units
    events = read_events(out)
    assert {f"activation/{n}/saturated" for n in hidden} <= set(events.Tags()["scalars"])
    assert "hist/activation/blocks.2" in events.Tags()["histograms"]

    runs = [Run(out, OmegaConf.to_container(cfg), [], result, init_stats)]
    report = write_report(out, runs).read_text()
    assert all(f"| {name} | " in report for name in hidden)  # the per-layer tables at init
    sym = symmetry.measure(runs)["inits"]["xavier"]
    assert len(sym["distinct_units"]) == 3 and sym["units"] == 16
    cell = naive_init.measure(runs)["cells"]["relu/xavier"]
    assert cell["top_layer"] == "blocks.2" and cell["depth"] == 3
    assert [s for s, _ in cell["top_saturated_curve"]] == [
        e.step for e in events.Scalars("activation/blocks.2/saturated")]
    weights = json.loads((out / "weights.json").read_text())
    depth = next(iter(vanishing.measure(runs)["cells"].values()))["depths"]["3"]
    assert depth["first_layer_change"] == weights["layers"]["blocks.0"]["change_rel"] > 0
    variants = next(iter(xavier_variants.measure(runs)["cells"].values()))
    assert variants["widths"] == [16, 16, 16]
    assert variants["fan_out_var"] == [init_stats["layers"][n]["fan_out_var"]
                                       for n in ["blocks.1", "blocks.2", "head"]]
    assert dropout.measure(runs)["rates"]["0"]["units"] == 16

