"""Bad input, as a new user would type it, stops before training with a message that names the
key, the value given and what is allowed (initlab.config)."""

from __future__ import annotations

import inspect
import json
import re

import lightning as L
import pytest

from initlab.config import TrainerConfig
from initlab.train import ConfigError, run
from tests.helpers import run_script


def assert_refused_before_training(make_cfg, tmp_path, overrides: list[str], message: str):
    """run() raises ConfigError matching ``message`` (a literal prefix); nothing trained: the
    result says failed at step 0 with that message, and no checkpoint was written."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        run(make_cfg(*overrides, outputs=True))
    out = tmp_path / "run"
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "failed" and result["steps"] == 0
    assert message in result["error"]
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())
    assert not list(out.glob("events.out.tfevents.*"))


@pytest.mark.parametrize("override,message", [
    ("trainer.max_epochs=abc", "trainer.max_epochs='abc' is invalid: it must be an integer "
                               "(-1: no limit) or null"),
    ("trainer.max_epochs=2.0", "trainer.max_epochs=2.0 is invalid: it must be an integer"),
    ("trainer.max_steps=-2", "trainer.max_steps=-2 is invalid: it must be an integer (-1: no "
                             "limit)"),
    ("trainer.log_every_n_steps=1.5", "trainer.log_every_n_steps=1.5 is invalid: it must be an "
                                      "integer >= 0 or null"),
    ("trainer.enable_progress_bar=no", "trainer.enable_progress_bar='no' is invalid: it must be "
                                       "true, false or null"),
    ("trainer.limit_val_batches=-1", "trainer.limit_val_batches=-1 is invalid: it must be a "
                                     "fraction from 0 to 1 (of the batches), an integer count, "
                                     "or null"),
    ("trainer.limit_val_batches=1.5", "trainer.limit_val_batches=1.5 is invalid"),
    ("trainer.devices=1.5", "trainer.devices=1.5 is invalid: it must be an integer, a list of "
                            "device indices or a string"),
    ("trainer.precision=64x", "trainer.precision='64x' is invalid; allowed: [None, 64, 32, 16, "),
    ("trainer.deterministic=maybe", "trainer.deterministic='maybe' is invalid; allowed: "
                                    "[None, True, False, 'warn']"),
    ("+trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1 is invalid: it must be a "
                                     "number >= 0 or null"),
])
def test_a_trainer_value_of_the_wrong_type_or_range_is_named(make_cfg, tmp_path, override,
                                                              message):
    assert_refused_before_training(make_cfg, tmp_path, [override], message)


@pytest.mark.parametrize("override,message", [
    ("test=maybe", "test='maybe' is invalid: it must be true or false"),
    ("auto_resume=1", "auto_resume=1 is invalid: it must be true or false"),
    ("compile=yes", "compile='yes' is invalid: it must be true or false"),
    ("seed=1.5", "seed=1.5 is invalid: it must be an integer >= 0"),
    ("seed=-1", "seed=-1 is invalid: it must be an integer >= 0"),
    ("l1=abc", "l1='abc' is invalid: it must be a number >= 0"),
    ("status.check_every_n_steps=abc", "status.check_every_n_steps='abc' is invalid: it must "
                                       "be an integer >= 1"),
])
def test_a_run_setting_of_the_wrong_type_is_named(make_cfg, tmp_path, override, message):
    assert_refused_before_training(make_cfg, tmp_path, [override], message)


@pytest.mark.parametrize("overrides,message,allowed", [
    (["+trainer.foo=1"], "trainer has unknown keys ['foo']; allowed: ['accelerator', ",
     "max_epochs"),
    (["+trainer.default_root_dir=/tmp/x"], "trainer has unknown keys ['default_root_dir']",
     "log_every_n_steps"),  # initlab sets it from output_dir
    (["+lr=0.1"], "the config has unknown top-level keys ['lr']; allowed: ['data', ", "optim"),
    (["+optim.foo=1"], "optim has unknown keys ['foo']; allowed: [", "lr"),
    (["+model.hiden=16"], "model has unknown keys ['hiden']; allowed: [", "hidden"),
    (["+data.batchsize=16"], "data has unknown keys ['batchsize']; allowed: [", "batch_size"),
    (["callbacks=default", "+callbacks.probe.evry=3"],
     "callbacks.probe has unknown keys ['evry']; allowed: [", "every_n_steps"),
    (["+init.scheme_name=xavier"], "init has unknown keys ['scheme_name']; allowed: [",
     "scheme"),
    (["+init.activation=relu"], "init has unknown keys ['activation']", "gain"),  # model's
    (["+augment.noise=0.1"], "augment has unknown keys ['noise']; allowed: [",
     "noise_std"),
])
def test_an_unknown_key_is_listed_with_the_allowed_ones(make_cfg, tmp_path, overrides, message,
                                                        allowed):
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        run(make_cfg(*overrides, outputs=True))
    allowed_part = str(caught.value).split("allowed: ", 1)[1]
    assert f"'{allowed}'" in allowed_part
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("key,folder,written", [
    ("data.data_dir", "/proc/initlab-test", "/proc/initlab-test/MNIST/raw"),
    ("data.data_dir", "{file}/sub", "{file}/sub/MNIST/raw"),
    ("checkpoint.best.dirpath", "{file}/ckpt", None),
    ("logger.save_dir", "{file}/tb", None),
])
def test_a_folder_that_cannot_be_made_is_named_by_its_key(make_cfg, tmp_path, key, folder,
                                                          written):
    regular = tmp_path / "a_file"
    regular.write_text("not a folder")
    folder = folder.format(file=regular)
    message = (f"{key}={folder!r} is invalid: it must be a folder this process can create and "
               "write")
    if written is not None:
        message += f" (the run writes {written.format(file=regular)})"
    assert_refused_before_training(make_cfg, tmp_path, [f"{key}={folder}"], message)


def test_the_trainer_schema_is_every_argument_of_lightnings_trainer():
    """A Lightning upgrade that adds or drops a Trainer argument fails here, not in a run."""
    set_by_initlab = {"callbacks", "logger", "plugins", "enable_checkpointing", "default_root_dir"}
    arguments = set(inspect.signature(L.Trainer.__init__).parameters) - {"self"}
    schema = {name for name in TrainerConfig.__dataclass_fields__ if name != "_target_"}
    assert schema == arguments - set_by_initlab


@pytest.mark.slow  # a fresh interpreter importing Lightning
def test_the_script_prints_the_message_without_a_library_traceback(tiny_data, tmp_path):
    proc = run_script("train.py", f"hydra.run.dir={tmp_path / 'run'}",
                      f"data.data_dir={tiny_data}", "data.sources=[local]", "trainer.max_epochs=abc")
    assert proc.returncode != 0
    assert "trainer.max_epochs='abc' is invalid: it must be an integer" in proc.stderr
    assert "site-packages" not in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("mode,key", [([], "hydra.run.dir"), (["-m"], "hydra.sweep.dir")])
def test_a_run_folder_hydra_cannot_make_is_named_before_hydra_tries(tmp_path, mode, key):
    regular = tmp_path / "a_file"
    regular.write_text("not a folder")
    folder = regular / "run"
    proc = run_script("train.py", *mode, f"{key}={folder}", "seed=1")
    assert proc.returncode != 0
    assert (f"{key}={str(folder)!r} is invalid: it must be a folder this process can create and "
            f"write; {regular} is a file, not a folder") in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
