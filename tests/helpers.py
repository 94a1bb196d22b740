"""Helpers shared by the tests: tiny IDX files with learnable fake digits, and a trap for
forward passes outside Lightning's stages."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import lightning as L
import numpy as np
import torch

from initlab.data import MNISTDataModule
from initlab.data.sources import idx_bytes
from initlab.models import CNN
from initlab.utils import weight_layers

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
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


def checkpoint_test_accuracy(ckpt: Path, data_dir: Path, **cnn) -> float:
    """Test accuracy of a CNN checkpoint evaluated in one process on the CPU, by hand."""
    dm = MNISTDataModule(data_dir=str(data_dir), verify=False, sources=["local"])
    dm.setup()
    model = CNN(**cnn)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()
                           if k.startswith("model.")})
    model.eval()
    x, y = dm.splits["test"]
    with torch.no_grad():
        return float((model(dm.standardize(x.unsqueeze(1).float() / 255)).argmax(1) == y)
                     .float().mean())


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

    import pytest
    import torch

    from initlab.train import build, run

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
