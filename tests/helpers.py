"""Helpers shared by the tests: the one way each test composes a config (``compose_config``,
shrunk by ``tiny_overrides``; the ``make_cfg`` fixture in conftest.py), launches a script
(``run_script``), fits (``fit``), reads an events file (``read_events``, ``read_scalars``) and
cuts a matrix (``matrix``); tiny IDX files with learnable fake digits; callbacks the tests name
by ``_target_``."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from initlab.data import MNISTDataModule
from initlab.data.sources import idx_bytes
from initlab.models import CNN
from initlab.train import build, run
from initlab.utils import weight_layers

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# ------------------------------------------------------------------ configs, scripts, events

# The smallest run that trains and validates: 96 examples in batches of 32 (3 steps an epoch),
# one epoch on the CPU, a 2-layer model, no monitors, no progress bar.
TINY_RUN = ["data.batch_size=32", "data.eval_batch_size=100", "trainer.accelerator=cpu",
            "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
            "trainer.log_every_n_steps=1", "callbacks=none"]
TINY_CNN = ["model.channels=[4,8]", "model.hidden=16"]
TINY_MLP = ["model.width=32", "model.depth=2"]
TINY_SHAPESET = ["data.train_size=96", "data.val_size=200", "data.test_size=200"]
NO_OUTPUTS = ["logger=none", "checkpoint=null"]


def tiny_overrides(overrides, data_dir: Path | None = None, outputs: bool = True) -> list[str]:
    """Overrides that shrink a run of ``overrides`` to the smallest that trains, but for the
    keys ``overrides`` set (a sweep's ``callbacks=default,glorot`` does not lose to a
    ``callbacks=none`` before it). MNIST reads the tiny IDX files under ``data_dir``
    (``write_tiny_mnist``); ``data=shapeset`` draws small sets. The model is shrunk in its
    own family's keys (a config file could not follow the model chosen). Without
    ``outputs``: no logger and no checkpoints."""
    if "data=shapeset" in overrides:
        data = TINY_SHAPESET
    else:
        assert data_dir is not None, "MNIST runs read the tiny files: give data_dir"
        data = [f"data.data_dir={data_dir}", "data.verify=false", "data.sources=[local]",
                "data.train_samples=96"]
    model = TINY_MLP if "model=mlp" in overrides else TINY_CNN
    given = {override.split("=")[0].lstrip("+~") for override in overrides}
    return [override for override in [*data, *TINY_RUN, *model, *([] if outputs else NO_OUTPUTS)]
            if override.split("=")[0] not in given]


def compose_config(*overrides: str, hydra: bool = False) -> DictConfig:
    """conf/train.yaml composed with ``overrides`` as scripts/train.py composes it; ``hydra``:
    with the ``hydra`` node (launcher settings) too. ``output_dir`` needs an override or
    ``hydra``: it interpolates Hydra's run folder."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=hydra)


def script_command(script: str, *args: str) -> list[str]:
    """The command line of ``scripts/<script>`` with ``args``, in this interpreter."""
    return [sys.executable, str(ROOT / "scripts" / script), *args]


def script_env(**extra: str) -> dict[str, str]:
    """The environment scripts run in: unbuffered output (lines in order), and the repository
    first on the path (kept: what was there, e.g. a GPU machine's packages) so that configs can
    name the callbacks in this module by ``_target_``."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **extra}


def run_script(script: str, *args: str, timeout: float = 600,
               env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run ``scripts/<script>`` with ``args`` from the repository root to its end, its output
    captured as text; ``env``: variables added to ``script_env()``."""
    kwargs.setdefault("cwd", ROOT)
    return subprocess.run(script_command(script, *args), capture_output=True, text=True,
                          timeout=timeout, env=script_env(**(env or {})), **kwargs)


def read_events(path) -> EventAccumulator:
    """Every event TensorBoard's own reader finds under ``path`` (one folder's events files),
    nothing sampled away."""
    events = EventAccumulator(str(path), size_guidance={"scalars": 0, "histograms": 0,
                                                        "images": 0, "tensors": 0})
    events.Reload()
    return events


def read_scalars(path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...] in the order written} of every scalar under ``path``."""
    events = read_events(path)
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]}


def matrix(*axes, fast: set[tuple]) -> list:
    """Every combination of two or more ``axes`` as pytest parameters: those in ``fast`` run in
    the fast suite, the others are marked ``slow``, which CI runs: a matrix cut to the cases
    that differ, the rest kept."""
    return [combo if combo in fast else pytest.param(*combo, marks=pytest.mark.slow)
            for combo in itertools.product(*axes)]


def fit(cfg: DictConfig, *extra: L.Callback):
    """build + fit as run() does, with test-only callbacks after the run's own; returns
    (datamodule, module, trainer) afterwards."""
    datamodule, module, trainer = build(cfg)
    trainer.callbacks.extend(extra)
    trainer.fit(module, datamodule=datamodule)
    return datamodule, module, trainer


# ------------------------------------------------------------------------- data, callbacks

# the default config's robustness levels, as logged
CORRUPT_KEYS = frozenset(f"test_corrupt/{kind}_{level}/acc" for kind, levels in
                         (("noise", ("0.1", "0.2", "0.3", "0.5")), ("skew", ("10", "20", "30", "45")))
                         for level in levels)
TINY_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def make_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable fake digits: a bright 6x6 block whose position encodes the label, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        r, c = divmod(int(label), 5)
        images[i, 4 + 10 * r: 10 + 10 * r, 2 + 5 * c: 8 + 5 * c] = 250
    return images, labels


def write_tiny_mnist(root: Path, n_train: int = 600, n_test: int = 200, gz: bool = False) -> dict:
    """Write the four IDX files in torchvision's layout; return their md5s."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    train_x, train_y = make_digits(n_train, 0)
    test_x, test_y = make_digits(n_test, 1)
    md5 = {}
    for name, array in zip(TINY_FILES, (train_x, train_y, test_x, test_y), strict=False):
        data = idx_bytes(array)
        md5[name] = hashlib.md5(data).hexdigest()
        if gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (raw / name).write_bytes(data)
    return md5


def checkpoint_test_accuracy(ckpt: Path, data_dir: Path, corrupt=None, **cnn) -> float:
    """Test accuracy of a CNN checkpoint evaluated in one process on the CPU, by hand;
    ``corrupt`` (an Augment): on the test set it corrupts, whole, in chunks of
    CorruptedBatches.CHUNK from the start of its stream."""
    dm = MNISTDataModule(data_dir=str(data_dir), verify=False, sources=["local"])
    dm.setup()
    model = CNN(**cnn)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()
                           if k.startswith("model.")})
    model.eval()
    x, y = dm.splits["test"]
    images = x.unsqueeze(1).float() / 255
    if corrupt is not None:
        from initlab.data.splits import CorruptedBatches

        corrupt.set_epoch(0)
        chunk = CorruptedBatches.CHUNK
        images = torch.cat([corrupt(images[i: i + chunk]) for i in range(0, len(y), chunk)])
    with torch.no_grad():
        return float((model(dm.standardize(images)).argmax(1) == y).float().mean())


class StopAfterEpochs(L.Callback):
    """Ends training after ``epochs`` epochs, as an interruption between epochs would."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


class TeardownTrap(L.Callback):
    """Makes Lightning's end-of-stage teardown observable on CPU.

    ``Strategy.teardown`` moves the LightningModule to the CPU after every fit/validate/test/
    predict; on a GPU a forward pass after that meets data still on the GPU and dies. On CPU both
    devices are the same, so this trap marks the module "off device" after the strategy's
    teardown and fails any Conv/Linear forward until the next stage's strategy setup has placed
    the module again. Add it through the config: ``+callbacks.trap._target_=tests.helpers.TeardownTrap``.
    """

    last: TeardownTrap | None = None  # the latest instance, for tests that build through run()

    def __init__(self):
        self.off_device = False
        self.teardowns = 0
        self.forwards = 0  # Conv/Linear calls seen while placed: proves the hooks are live
        self._strategy = None
        self._hooked: set[int] = set()
        TeardownTrap.last = self

    def setup(self, trainer, pl_module, stage: str) -> None:
        strategy = trainer.strategy
        if strategy is not self._strategy:
            self._strategy = strategy
            place, release = strategy.setup, strategy.teardown

            def setup(trainer):
                place(trainer)
                self.off_device = False

            def teardown():
                release()
                self.off_device = True
                self.teardowns += 1

            strategy.setup, strategy.teardown = setup, teardown
        for layer in weight_layers(pl_module).values():
            if id(layer) not in self._hooked:
                self._hooked.add(id(layer))
                layer.register_forward_pre_hook(self._check)

    def _check(self, layer, args) -> None:
        if self.off_device:
            raise RuntimeError(
                f"{type(layer).__name__} forward after Lightning's Strategy.teardown moved the "
                "model to the CPU: on a GPU it would meet data on another device; run it inside "
                "trainer.fit/validate/test/predict")
        self.forwards += 1


class CrashAtStep(L.Callback):
    """A crash inside training (not a configuration error) at optimizer step ``step``; None:
    never. Named by ``_target_`` in the tests' sweeps."""

    def __init__(self, step: int | None = None):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.step is not None and trainer.global_step == self.step:
            raise RuntimeError(f"simulated crash at step {self.step}")


RESUME_RECIPE = ["seed=7", "model.dropout=0.3", "augment=noise_skew", "optim=adam",
                 "scheduler=onecycle", "trainer.deterministic=true", "robustness=null",
                 "trainer.max_epochs=4"]


def assert_resume_after_two_epochs_matches(make_cfg, tmp_path: Path, *extra: str) -> Path:
    """Train 4 epochs straight; train 2, resume from last.ckpt to 4; the metrics (1e-6) and
    weights must agree. Returns the interrupted run's folder."""
    import json

    common = [*extra, *RESUME_RECIPE]
    full, first, resumed = (tmp_path / name for name in ("full", "first", "resumed"))
    run(make_cfg(*common, f"output_dir={full}", outputs=True))
    datamodule, module, trainer = build(make_cfg(*common, f"output_dir={first}", outputs=True))
    trainer.callbacks.append(StopAfterEpochs(2))
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 6
    run(make_cfg(*common, f"output_dir={resumed}",
                 f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}", outputs=True))
    a = json.loads((full / "result.json").read_text())
    b = json.loads((resumed / "result.json").read_text())
    assert a["status"] == b["status"] != "failed"
    assert a["steps"] == b["steps"] == 12
    for key in ("test/acc", "test/loss", "val/acc", "val/loss"):
        assert a["metrics"][key] == pytest.approx(b["metrics"][key], abs=1e-6), key
    wa, wb = (torch.load(d / "checkpoints" / "last.ckpt", map_location="cpu",
                         weights_only=False)["state_dict"] for d in (full, resumed))
    assert [k for k in wa if not torch.allclose(wa[k], wb[k], atol=1e-6)] == []
    return first


class PauseAtStep(L.Callback):
    """After optimizer step ``step``, write this process's id to ``marker`` and wait (at most
    ``wait_s``) for a stop signal, as a job mid-epoch would receive one; None: never. Named by
    ``_target_`` in the tests' relaunched runs (a resumed run is past the step)."""

    def __init__(self, step: int | None = None, marker: str | None = None, wait_s: float = 120.0):
        self.step, self.marker, self.wait_s = step, marker, wait_s

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        import os
        import time

        if self.step is None or trainer.global_step != self.step:
            return
        Path(self.marker).write_text(str(os.getpid()))
        deadline = time.monotonic() + self.wait_s
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.05)
