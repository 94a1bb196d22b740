"""data.eval_batch_size=auto evaluates in the batch that measured fastest for the model on the
device (the CPU: the largest power of two whose largest layer output stays within 16 MiB, at
most 1000; CUDA: 1000), and the batch changes speed, not what an evaluation measures."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn

from initlab.data import MNISTDataModule
from initlab.data.splits import to_unit
from initlab.train import EVAL_ACTIVATION_BYTES, build, eval_batch_in_effect, largest_output_bytes, run
from tests.helpers import compose_config

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)
DEFAULT_CNN = ["model.channels=[24,32]", "model.hidden=256"]


def test_auto_takes_the_largest_power_of_two_whose_activations_fit_on_the_cpu():
    cnn = instantiate(compose_config("model=cnn").model)
    # by hand: conv1 maps a 28 x 28 image to 24 channels of 24 x 24 float32s (the largest)
    assert largest_output_bytes(cnn, (1, 28, 28)) == 24 * 24 * 24 * 4
    assert EVAL_ACTIVATION_BYTES // (24 * 24 * 24 * 4) == 303
    assert eval_batch_in_effect("auto", cnn, (1, 28, 28), CPU) == 256
    mlp = instantiate(compose_config("model=mlp").model)  # 1000-wide layers: 4 kB an example
    assert eval_batch_in_effect("auto", mlp, (1, 28, 28), CPU) == 1000
    assert eval_batch_in_effect("auto", cnn, (1, 28, 28), CUDA) == 1000
    assert eval_batch_in_effect(300, cnn, (1, 28, 28), CPU) == 300
    wide = nn.Sequential(nn.Flatten(), nn.Linear(4, EVAL_ACTIVATION_BYTES // 4 // 3 + 1))
    assert eval_batch_in_effect("auto", wide, (4,), CPU) == 2  # 2 fit, 3 do not
    huge = nn.Sequential(nn.Flatten(), nn.Linear(4, EVAL_ACTIVATION_BYTES // 4 + 1))
    assert eval_batch_in_effect("auto", huge, (4,), CPU) == 1


def test_measuring_the_activations_leaves_the_model_and_the_random_streams_as_they_were():
    cnn = instantiate(compose_config("model=cnn", "model.dropout=0.5", "model.batchnorm=true").model)
    cnn.train()
    stats = {k: v.clone() for k, v in cnn.state_dict().items()}
    rng = torch.get_rng_state()
    largest_output_bytes(cnn, (1, 28, 28))
    assert cnn.training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, stats[k]) for k, v in cnn.state_dict().items())  # BN's stats too
    assert not cnn.conv1._forward_hooks


@pytest.mark.parametrize("setting, expected", [("auto", 256), ("128", 128)])
def test_build_sets_the_batch_in_effect_and_result_json_records_it(make_cfg, tmp_path, setting,
                                                                    expected):
    cfg = make_cfg(f"data.eval_batch_size={setting}", *DEFAULT_CNN, "trainer.max_steps=2",
                   f"output_dir={tmp_path / setting}", outputs=True)
    run(cfg)
    result = json.loads((tmp_path / setting / "result.json").read_text())
    assert result["eval_batch_size"] == expected


def test_evaluation_measures_the_same_whatever_the_batch(make_cfg):
    """Accuracies are counts and losses batch-size-weighted means: one trained model tested in
    batches of 7 (which divides nothing here), 64 and 1000 gets the same figures."""
    datamodule, module, trainer = build(make_cfg("trainer.max_steps=10", "robustness=null"))
    trainer.fit(module, datamodule=datamodule)
    figures = {}
    for batch in (7, 64, 1000):
        datamodule.eval_batch_size = batch
        figures[batch] = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    assert len(datamodule.splits["test"][1]) % 7 and len(datamodule.splits["test"][1]) < 1000
    for batch in (7, 64):
        assert figures[batch]["test/acc"] == figures[1000]["test/acc"]
        assert figures[batch]["test/loss"] == pytest.approx(figures[1000]["test/loss"], rel=1e-5)


@pytest.mark.parametrize("value", [0, -5, "fast", True, 2.5])
def test_a_bad_eval_batch_size_is_named_with_what_is_allowed(tiny_data, value):
    with pytest.raises(ValueError, match=rf"data.eval_batch_size={value!r} is invalid: it must "
                                         r"be auto or an integer >= 1"):
        MNISTDataModule(data_dir=str(tiny_data), eval_batch_size=value)


def test_auto_unresolved_is_a_clear_error_not_a_guess(tiny_data):
    datamodule = MNISTDataModule(data_dir=str(tiny_data), eval_batch_size="auto",
                                 sources=["local"], verify=False)
    datamodule.setup()
    with pytest.raises(ValueError, match="eval_batch_size=auto is chosen for a model and device"):
        datamodule.test_dataloader()
    assert datamodule.train_dataloader() is not None  # training batches do not need it


class RecordValidation(L.Callback):
    """At every validation epoch's end: the logged val/acc and val/loss, and what the model
    scores on the validation examples the pass covered, recomputed on full tensors."""

    def __init__(self, examples: int):
        self.examples, self.seen = examples, []

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        x, y = trainer.datamodule.splits["val"]
        x, y = trainer.datamodule.standardize(to_unit(x[: self.examples])), y[: self.examples]
        with torch.no_grad():
            logits = pl_module.model(x)
        self.seen.append((float(trainer.callback_metrics["val/acc"]),
                          float(trainer.callback_metrics["val/loss"]),
                          float((logits.argmax(1) == y).double().mean()),
                          float(F.cross_entropy(logits.double(), y))))


@pytest.mark.parametrize("batch, limit", [(7, "1.0"), (64, "1.0"), (16, "3")])
def test_evaluation_figures_equal_a_recomputation_on_full_tensors(make_cfg, batch, limit):
    """val/acc and val/loss at every epoch (a sanity pass first; all batches or the first 3)
    and test/acc and test/loss: the accuracy and mean cross-entropy of the examples the pass
    covered, recomputed in one forward of the whole set."""
    cfg = make_cfg(f"data.eval_batch_size={batch}", f"trainer.limit_val_batches={limit}",
                   "trainer.num_sanity_val_steps=2", "trainer.max_epochs=2", "robustness=null")
    datamodule, module, trainer = build(cfg)
    datamodule.setup()
    n_val = len(datamodule.splits["val"][1])
    examples = n_val if limit == "1.0" else int(limit) * batch
    record = RecordValidation(examples)
    trainer.callbacks.append(record)
    trainer.fit(module, datamodule=datamodule)
    assert len(record.seen) == 2 and examples < n_val + (limit == "1.0")
    for acc, loss, expected_acc, expected_loss in record.seen:
        assert acc == pytest.approx(expected_acc, abs=1e-6)
        assert loss == pytest.approx(expected_loss, rel=1e-5)
    figures = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    x, y = datamodule.splits["test"]
    with torch.no_grad():
        logits = module.model.eval()(datamodule.standardize(to_unit(x)))
    assert figures["test/acc"] == pytest.approx(float((logits.argmax(1) == y).double().mean()),
                                                abs=1e-6)
    assert figures["test/loss"] == pytest.approx(float(F.cross_entropy(logits.double(), y)),
                                                 rel=1e-5)
