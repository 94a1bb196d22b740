"""Speed of initlab against hand-written PyTorch, measured as ratios in one process.

    python scripts/bench.py                 # every case, a few minutes on 2 CPU cores
    python scripts/bench.py --quick         # tiny sizes, one round: checks the script runs
    python scripts/bench.py --cases framework monitors
    python scripts/bench.py --device cuda   # the same cases on the GPU, with its own goals
    python scripts/bench.py --cases whole   # whole train.py processes vs plain_train.py
    python scripts/bench.py --cases shapeset  # Shapeset-3x2 images/s vs a 5x1000 MLP step

Variants of a case are interleaved over several rounds after a warm-up; each figure is the
median, and a spread (max/min - 1) over 10% is flagged. The framework and speedrun cases go
further: each fit is paired, every 20 steps, with as many steps of a raw loop that trains a copy
of the fit's model on the same batches (this machine's speed drifts too much between whole fits
to read a 5% difference), and the two models' weights are compared after. Prints a table and
writes bench.json (with the machine: torch, and on CUDA the card, driver and CUDA version). On CUDA
every timing ends with a synchronize, and the speedrun warms the device up first.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from initlab import project_root
from initlab.data.mnist import MEAN, STD, to_unit
from initlab.data.sources import idx_bytes
from initlab.init import apply_init
from initlab.module import build_scheduler
from initlab.train import build, channels_last_in_effect
from initlab.utils import DATA_ORDER, atomic_write, retain_freed_memory, stream_seed

ROOT = project_root()
SPREAD_WARNING = 0.10
PAIR_EVERY = 20  # framework case: steps between switches to the raw loop
# the speedrun's goals on one H100-class GPU (on CPU only the accuracy and the ratio apply)
GPU_SPEEDRUN_SECONDS = 2.0
SPEEDRUN_ACCURACY = 0.99


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work, so a timer stops when the work is done."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def machine(device: str) -> dict:
    """What the figures were measured on."""
    info = {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available()}
    if device == "cuda":
        try:
            driver = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", "-i", "0"],
                capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            driver = "unknown (nvidia-smi failed)"
        info.update(gpu=torch.cuda.get_device_name(0), driver=driver,
                    cuda_runtime=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return info


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def synthetic_mnist(root: Path, n_train: int, n_test: int) -> Path:
    """Random IDX files of MNIST's shapes, read by the real parser (speed does not need digits)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            idx_bytes(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            idx_bytes(rng.integers(0, 10, n, dtype=np.uint8)))
    return root


def median_and_spread(samples: list[float]) -> tuple[float, float]:
    return statistics.median(samples), max(samples) / min(samples) - 1


def interleave(variants: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run each variant once to warm up, then ``rounds`` times in turn; collect seconds."""
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            times[name].append(fn())
    return times


class RawSteps:
    """The hand-written baseline, resumable: slice, scale, forward, backward, step (and the LR
    schedule's step, if given). Each call trains the next ``steps`` batches, in the data
    module's order for the run ``seed``: epoch e is a permutation drawn from the (seed, epoch)
    stream. Returns the seconds it took."""

    def __init__(self, model: torch.nn.Module, optimizer, images, labels, batch_size: int,
                 seed: int, scheduler=None):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.images, self.labels = images, labels
        self.batch_size, self.seed = batch_size, seed
        self.per_epoch = -(-len(labels) // batch_size)
        self.done = 0
        self._epoch, self._batches = -1, []

    def _batch(self, step: int) -> torch.Tensor:
        epoch = step // self.per_epoch
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(stream_seed(self.seed, DATA_ORDER, epoch))
            order = torch.randperm(len(self.labels), generator=gen)
            self._epoch, self._batches = epoch, order.to(self.images.device).split(self.batch_size)
        return self._batches[step % self.per_epoch]

    def __call__(self, steps: int) -> float:
        self.model.train()
        sync(self.images.device)
        start = time.perf_counter()
        for _ in range(steps):
            idx = self._batch(self.done)
            self.done += 1
            x = (self.images[idx].unsqueeze(1).float().div_(255) - MEAN) / STD
            loss = F.cross_entropy(self.model(x), self.labels[idx])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
        sync(self.images.device)
        return time.perf_counter() - start


def initlab_fit(cfg, datamodule) -> tuple[float, object]:
    _, module, trainer = build(cfg, datamodule=datamodule)
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)  # ends by moving the model to the CPU: synced
    return time.perf_counter() - start, (module, trainer)


def training_overrides(data_dir: Path, steps: int, out: Path, quick: bool,
                       device: str = "cpu") -> list[str]:
    return [f"data.data_dir={data_dir}", "data.verify=false", "data.sources=[local]",
            f"trainer.max_steps={steps}", "trainer.max_epochs=1", "trainer.limit_val_batches=0",
            "trainer.enable_progress_bar=false",
            f"trainer.accelerator={device}", "scheduler=none", "checkpoint=null",
            f"output_dir={out}", "test=false",
            *(["model.channels=[4,8]", "model.hidden=16"] if quick else [])]


class PairedRaw(L.Callback):
    """Interleaves the hand-written loop with an initlab fit: after every ``every`` training
    steps the fit pauses while ``raw`` trains as many steps, so each segment of the fit is
    paired with a raw segment run right after it, on the same machine state (this 2-core
    machine's speed drifts by tens of percent within a minute, which alternating whole fits
    cannot cancel). Records per pair the fit's seconds, the raw seconds and the step count;
    what the fit spends outside its training segments (Lightning's setup and teardown) is the
    fit's total minus both, and counts as the framework's. A fit with an LR schedule gives
    ``raw`` the same one, over the steps Lightning planned for the fit (as
    ``Classifier.configure_optimizers`` builds it)."""

    def __init__(self, every: int, raw: RawSteps | None = None):
        self.raw, self.every = raw, every  # raw: set before the fit starts
        self.fit_s: list[float] = []
        self.raw_s: list[float] = []
        self.steps: list[int] = []

    def on_train_start(self, trainer, pl_module) -> None:
        factory = getattr(pl_module, "scheduler_factory", None)
        if factory is not None:
            self.raw.scheduler = build_scheduler(factory, self.raw.optimizer,
                                                 int(trainer.estimated_stepping_batches))
        sync(pl_module.device)
        self._segment_start, self._step_at_start = time.perf_counter(), trainer.global_step

    def _close_segment(self, trainer, pl_module) -> None:
        steps = trainer.global_step - self._step_at_start
        if steps == 0:
            return
        sync(pl_module.device)
        self.fit_s.append(time.perf_counter() - self._segment_start)
        self.raw_s.append(self.raw(steps))
        self.steps.append(steps)
        self._segment_start, self._step_at_start = time.perf_counter(), trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step - self._step_at_start >= self.every:
            self._close_segment(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._close_segment(trainer, pl_module)


class MinimalModule(L.LightningModule):
    """The least a LightningModule does: forward, cross-entropy, the optimizer. Trained by
    Lightning's loop like initlab's, it measures what Lightning itself adds to a raw loop."""

    def __init__(self, model: torch.nn.Module, optimizer: Callable):
        super().__init__()
        self.model, self.optimizer_factory = model, optimizer

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.model(x), y)

    def configure_optimizers(self):
        return self.optimizer_factory(self.model.parameters())


def build_minimal(cfg, callbacks: list[L.Callback],
                  barebones: bool = False) -> tuple[L.LightningModule, L.Trainer]:
    """:class:`MinimalModule` with the model and optimizer of ``cfg``, on a Trainer of the same
    trainer settings, without initlab's callbacks, logger or checkpoints; ``barebones``: in
    Lightning's barebones mode (no logging machinery, progress bar, model summary or profiler:
    Lightning's loop with what may slow it turned off)."""
    torch.manual_seed(cfg.seed)
    module = MinimalModule(instantiate(cfg.model), instantiate(cfg.optim))
    bare = {"barebones": True, "enable_progress_bar": False, "enable_model_summary": False,
            "log_every_n_steps": 0, "num_sanity_val_steps": 0} if barebones else {}
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=False,
                          enable_checkpointing=False, default_root_dir=str(cfg.output_dir), **bare)
    return module, trainer


def paired_fit(cfg, datamodule, images, labels, every: int, minimal: bool = False,
               barebones: bool = False) -> dict:
    """One initlab fit (or, ``minimal``, a :class:`MinimalModule` fit, with ``barebones`` in
    Lightning's barebones mode) interleaved with a raw loop (see :class:`PairedRaw`) that trains
    a copy of the fit's model, from the same initial weights, on the same batches in the same
    order (``images``, ``labels``: the training split on the device), with an optimizer and LR
    schedule of the same config: both do the same work from the same state (a model in its first
    epoch trains ~2% slower a step here than one trained for a few epochs, so a raw loop that
    kept training across fits was not a fair baseline). Returns the fit's segments, the raw
    segments paired with them, the seconds outside the segments, ``max_weight_diff`` (the
    largest difference between the two models' parameters, weights and biases, after the fit: 0
    when the fit trained exactly what the raw loop did), and the ``raw`` loop, ``module`` and
    ``trainer``."""
    pairing = PairedRaw(every)
    if minimal:
        module, trainer = build_minimal(cfg, [pairing], barebones=barebones)
    else:
        _, module, trainer = build(cfg, datamodule=datamodule, extra_callbacks=[pairing])
    model = copy.deepcopy(module.model).to(images.device)
    pairing.raw = RawSteps(model, instantiate(cfg.optim)(model.parameters()), images, labels,
                           cfg.data.batch_size, cfg.seed)  # the schedule: at the fit's start
    sync(images.device)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)  # ends by moving the model to the CPU: synced
    total_s = time.perf_counter() - start
    if sum(pairing.steps) != trainer.global_step:
        raise RuntimeError(f"paired {sum(pairing.steps)} of the fit's {trainer.global_step} steps")
    fitted = dict(module.model.named_parameters())
    diff = max(float((p.detach().cpu() - fitted[name].detach()).abs().max())
               for name, p in model.named_parameters())
    return {"fit_s": pairing.fit_s, "raw_s": pairing.raw_s, "steps": pairing.steps,
            "outside_s": total_s - sum(pairing.fit_s) - sum(pairing.raw_s),
            "max_weight_diff": diff, "raw": pairing.raw, "module": module, "trainer": trainer}


def paired_ratio(fits: list[dict]) -> float:
    """initlab seconds (segments + outside) over the raw seconds of the same steps."""
    return (sum(sum(f["fit_s"]) + f["outside_s"] for f in fits)
            / sum(sum(f["raw_s"]) for f in fits))


def bootstrap_ratios(fits: list[dict], samples: int = 2000, seed: int = 0) -> np.ndarray:
    """:func:`paired_ratio` of ``samples`` resamplings of the (fit, raw) segment pairs of all
    fits together; the seconds outside the segments are kept as measured."""
    fit_s = np.concatenate([f["fit_s"] for f in fits])
    raw_s = np.concatenate([f["raw_s"] for f in fits])
    outside = sum(f["outside_s"] for f in fits)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(fit_s), (samples, len(fit_s)))
    return (fit_s[idx].sum(1) + outside) / raw_s[idx].sum(1)


def interval95(samples: np.ndarray) -> list[float]:
    return [float(v) for v in np.quantile(samples, [0.025, 0.975])]


def case_framework_and_monitors(args, data_dir: Path, out: Path) -> dict:
    """initlab (monitors off / default / glorot) and a minimal LightningModule vs a hand-written
    loop of the same model, batch size and optimizer, one epoch per fit: each fit is interleaved
    every ``PAIR_EVERY`` steps with a raw loop that trains a copy of its model on the same
    batches (:func:`paired_fit`), over ``rounds`` fits of each variant in turn after a warm-up;
    ``max_weight_diff``: per variant, the largest weight difference between fit and raw loop
    after an epoch. ``framework`` is initlab without monitors over the raw loop,
    ``lightning_alone`` the minimal module over it (``lightning_barebones``: in Lightning's
    barebones mode), ``initlab_vs_lightning`` the first over the second (what initlab adds to
    Lightning); the monitors' figures divide the monitored fits' ratios by initlab's. Spread:
    the numerator's per-fit ratios' max/min - 1; ``interval``: a 95% bootstrap interval."""
    steps = 20 if args.quick else 430  # one epoch of 55k at batch 128
    every = 5 if args.quick else PAIR_EVERY
    base = training_overrides(data_dir, steps, out, args.quick, args.device)
    cfgs = {name: compose_cfg(*base, f"callbacks={cb}")
            for name, cb in (("initlab", "none"), ("monitors_default", "default"),
                             ("monitors_glorot", "glorot"))}
    datamodule = instantiate(cfgs["initlab"].data)
    datamodule.setup()
    images, labels = (t.clone().to(args.device) for t in datamodule.splits["train"])
    # name: (config, a MinimalModule, in barebones mode)
    variants = {**{name: (c, False, False) for name, c in cfgs.items()},
                "lightning": (cfgs["initlab"], True, False),
                "barebones": (cfgs["initlab"], True, True)}
    fits: dict[str, list[dict]] = {name: [] for name in variants}
    for r in range(args.rounds + 1):  # round 0: the warm-up, not counted
        for name, (variant_cfg, minimal, barebones) in variants.items():
            fit = paired_fit(variant_cfg, datamodule, images, labels, every, minimal=minimal,
                             barebones=barebones)
            for done_with in ("raw", "module", "trainer"):  # only the figures are kept
                del fit[done_with]
            if r > 0:
                fits[name].append(fit)
    per_fit = {name: [paired_ratio([f]) for f in rows] for name, rows in fits.items()}
    pooled = {name: paired_ratio(rows) for name, rows in fits.items()}
    resampled = {name: bootstrap_ratios(rows, seed=i)
                 for i, (name, rows) in enumerate(fits.items())}
    result = {"seconds": {}, "spread": {}, "ratios": {}, "interval": {}, "per_fit": per_fit,
              "steps": steps, "pair_every": every, "rounds": args.rounds,
              "max_weight_diff": {name: max(f["max_weight_diff"] for f in rows)
                                  for name, rows in fits.items()}}
    for name, rows in fits.items():
        result["seconds"][name] = statistics.median(
            sum(f["fit_s"]) + f["outside_s"] for f in rows)
        result["seconds"][f"{name}_raw"] = statistics.median(sum(f["raw_s"]) for f in rows)
        result["seconds"][f"{name}_outside"] = statistics.median(f["outside_s"] for f in rows)
    # (label, numerator, denominator): each fit's ratio is to its own paired raw seconds
    figures = [("framework", "initlab", None), ("lightning_alone", "lightning", None),
               ("lightning_barebones", "barebones", None),
               ("initlab_vs_lightning", "initlab", "lightning"),
               ("monitors_default", "monitors_default", "initlab"),
               ("monitors_glorot", "monitors_glorot", "initlab")]
    for label, num, den in figures:
        ratio, samples = pooled[num], resampled[num]
        if den is not None:
            ratio, samples = ratio / pooled[den], samples / resampled[den]
        result["ratios"][label] = ratio
        result["interval"][label] = interval95(samples)
        result["spread"][label] = max(per_fit[num]) / min(per_fit[num]) - 1
    return result


def summarize(times: dict[str, list[float]], unit_steps: int, pairs: dict) -> dict:
    """Median seconds and spread per variant, and the ratio of each (numerator, denominator)."""
    result = {"seconds": {}, "ratios": {}, "spread": {}}
    for name, samples in times.items():
        med, spread = median_and_spread(samples)
        result["seconds"][name] = med
        result["spread"][name] = spread
    for label, (num, den) in pairs.items():
        result["ratios"][label] = result["seconds"][num] / result["seconds"][den]
    result["steps"] = unit_steps
    return result


def case_data(args, data_dir: Path, out: Path) -> dict:
    """Batches per second of the data module: plain, and with noise+skew augmentation against
    the same transforms done per image with torchvision on PIL images."""
    from PIL import Image
    from torchvision.transforms import v2

    from initlab.data.augment import Augment

    n = 2_000 if args.quick else 20_000
    cfg = compose_cfg(*training_overrides(data_dir, 1, out, args.quick, args.device))
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    images = datamodule.splits["train"][0][:n].to(args.device)
    augment = Augment(noise_std=0.1, skew_degrees=15.0, seed=0)
    batch_size = cfg.data.batch_size

    def batched(transform) -> float:
        sync(args.device)
        start = time.perf_counter()
        for i in range(0, n, batch_size):
            transform(to_unit(images[i: i + batch_size]))
        sync(args.device)
        return time.perf_counter() - start

    per_image = v2.Compose([v2.RandomAffine(degrees=0, shear=(-15, 15, 0, 0)), v2.PILToTensor(),
                            v2.ToDtype(torch.float32, scale=True)])
    pil_images = [Image.fromarray(img.numpy()) for img in images[: n // 10].cpu()]

    def pil() -> float:  # a tenth of the images: the per-image path is slow
        start = time.perf_counter()
        for img in pil_images:
            x = per_image(img)
            (x + 0.1 * torch.randn_like(x)).clamp_(0, 1)
        return (time.perf_counter() - start) * 10

    times = interleave({"plain": lambda: batched(lambda x: x), "augmented": lambda: batched(augment),
                        "per_image_pil": pil}, args.rounds)
    result = summarize(times, n, {
        "augmented_vs_per_image": ("per_image_pil", "augmented")})
    result["images_per_s"] = {k: n / v for k, v in result["seconds"].items()}
    return result


def case_speedrun(args, data_dir: Path, out: Path) -> dict:
    """experiment=speedrun on real MNIST: training time and test accuracy per seed, against a
    raw loop of the same recipe (the fit's initial weights, Adam, one-cycle, batch 256, same
    epochs and data order), paired with the fit every ``PAIR_EVERY`` steps like the framework
    case (:func:`paired_fit`); ``max_weight_diff``: the largest weight difference between the
    two after training, over the seeds. On CUDA this is the GPU speedrun: a warm-up run first
    (CUDA context, cuDNN and kernel loading happen once per process), and a goal on the
    training time itself."""
    seeds = list(range(min(args.seeds, 2) if args.quick else args.seeds))
    extra = ["trainer.max_steps=40", "model.channels=[4,8]", "model.hidden=16",
             "data.verify=false", "data.sources=[local]"] if args.quick else []
    device = torch.device(args.device)
    every = 5 if args.quick else PAIR_EVERY
    rows = []
    datamodule = None
    for seed in ([-1] if device.type == "cuda" else []) + seeds:  # -1: the warm-up
        # the files' md5 is checked once, by the first data module, outside any timed span
        verify = [] if datamodule is None else ["data.verify=false"]
        cfg = compose_cfg("experiment=speedrun", f"seed={max(seed, 0)}", f"data.data_dir={data_dir}",
                          *verify, "logger=none", "checkpoint=null", f"trainer.accelerator={args.device}",
                          "trainer.enable_progress_bar=false", "trainer.limit_val_batches=0",
                          "robustness=null", f"output_dir={out}", *extra,
                          *(["trainer.max_steps=20"] if seed < 0 else []))
        # each seed its own data module (its data order follows data.seed = the run's seed),
        # sharing the splits read once
        loaded, datamodule = datamodule, instantiate(cfg.data)
        if loaded is not None:
            datamodule.splits = loaded.splits
        else:
            datamodule.prepare_data()
        datamodule.setup()
        images, labels = (t.clone().to(device) for t in datamodule.splits["train"])
        fit = paired_fit(cfg, datamodule, images, labels, every)
        acc = fit["trainer"].test(fit["module"], datamodule=datamodule,
                                  verbose=False)[0]["test/acc"]
        model = fit["raw"].model.eval()
        test_x, test_y = (t.to(device) for t in datamodule.splits["test"])
        with torch.no_grad():
            raw_acc = float((model(datamodule.standardize(to_unit(test_x)))
                             .argmax(1) == test_y).float().mean())
        if seed >= 0:
            # training_s: the training loop's own spans (on_train_start to on_train_end), not
            # Lightning's setup and teardown (model and data moves, CUDA cache clear), which
            # the ratio still counts as the framework's
            rows.append({"seed": seed, "training_s": sum(fit["fit_s"]),
                         "setup_teardown_s": fit["outside_s"],
                         "initlab_s": sum(fit["fit_s"]) + fit["outside_s"],
                         "initlab_acc": acc, "raw_s": sum(fit["raw_s"]), "raw_acc": raw_acc,
                         "ratio": paired_ratio([fit]),
                         "max_weight_diff": fit["max_weight_diff"]})
    training_s = statistics.median(r["training_s"] for r in rows)
    result = {
        "runs": rows,
        "mean_acc": statistics.mean(r["initlab_acc"] for r in rows),
        "raw_mean_acc": statistics.mean(r["raw_acc"] for r in rows),
        "training_s": training_s,
        "ratios": {"speedrun_time": sum(r["initlab_s"] for r in rows)
                   / sum(r["raw_s"] for r in rows)},
        "max_weight_diff": {"speedrun": max(r["max_weight_diff"] for r in rows)},
    }
    result["goals"] = {f"mean_acc >= {SPEEDRUN_ACCURACY:g}": result["mean_acc"] >= SPEEDRUN_ACCURACY}
    if device.type == "cuda":
        result["goals"][f"training_s <= {GPU_SPEEDRUN_SECONDS:g}"] = training_s <= GPU_SPEEDRUN_SECONDS
    return result


def case_startup(args, data_dir: Path, out: Path) -> dict:
    """Seconds from process start to the end of one training step (an upper bound of the time
    to the first step), for ``python scripts/train.py``."""
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), f"data.data_dir={data_dir}",
           "data.verify=false", "data.sources=[local]", "trainer.max_steps=1", "test=false",
           "logger=none", "checkpoint=null", "callbacks=none", "trainer.limit_val_batches=0",
           f"trainer.accelerator={args.device}", "trainer.enable_progress_bar=false",
           f"hydra.run.dir={out / 'startup'}"]
    samples = []
    for _ in range(1 if args.quick else 3):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        samples.append(time.perf_counter() - start)
    med, spread = median_and_spread(samples)
    return {"seconds": {"startup": med}, "spread": {"startup": spread}}


# whole processes: the speedrun as a user runs it, and the default command cut to one epoch
# (monitors, the corrupted test sets, logger and checkpoints all on) to stay ~a minute; round r
# runs seed r, so 5 rounds give the speedrun's 5-seed accuracy as whole processes
WHOLE_COMMANDS = {"speedrun": ["experiment=speedrun"], "default": ["trainer.max_epochs=1"]}
WHOLE_QUICK = ["trainer.max_steps=6", "model.channels=[4,8]", "model.hidden=16",
               "data.verify=false", "data.sources=[local]"]
BREAKDOWN = ("startup", "data_load", "build", "first_step", "fit", "validation", "probe",
             "checkpoint_writes", "test", "robustness", "logging", "total")
PLAIN_RECIPE = {"optim._target_": "torch.optim.Adam", "optim.weight_decay": 0.0,
                "scheduler._target_": "torch.optim.lr_scheduler.OneCycleLR",
                "scheduler.cycle_momentum": False, "model._target_": "initlab.models.CNN",
                "model.activation": "relu", "model.kernel_sizes": [5, 3], "model.dropout": 0.0,
                "model.batchnorm": False, "init.scheme": "default", "init.bias": "default",
                "data.normalize": True, "data.train_samples": None, "l1": 0.0, "l2": 0.0,
                "augment": None}


def plain_args(cfg, data_dir: Path) -> list[str]:
    """scripts/plain_train.py's arguments for the recipe of ``cfg``; refuses a recipe it does
    not reproduce (another optimizer, augmentation, ...) rather than time something else."""
    from omegaconf import OmegaConf

    for key, expected in PLAIN_RECIPE.items():
        value = OmegaConf.select(cfg, key)
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        if key == "augment" and value is not None:
            value = {k: v for k, v in value.items() if k not in ("_target_", "seed") and v} or None
        if value != expected:
            raise ValueError(f"plain_train.py does not reproduce {key}={value!r} "
                             f"(it does {expected!r})")
    return ["--data-dir", str(data_dir), "--epochs", str(cfg.trainer.max_epochs),
            "--max-steps", str(cfg.trainer.max_steps), "--batch-size", str(cfg.data.batch_size),
            "--eval-batch-size", str(cfg.data.eval_batch_size), "--lr", str(cfg.optim.lr),
            "--betas", *map(str, cfg.optim.betas), "--pct-start", str(cfg.scheduler.pct_start),
            "--seed", str(cfg.seed), "--channels", *map(str, cfg.model.channels),
            "--hidden", str(cfg.model.hidden)]


def timed_process(cmd: list[str]) -> float:
    """Wall seconds of a whole process, interpreter start to exit."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return seconds


def case_whole(args, data_dir: Path, out: Path) -> dict:
    """Whole processes: ``python scripts/train.py experiment=speedrun seed=<round>`` and the
    default command for one epoch, each alternated (order swapped every round) with
    scripts/plain_train.py on the same recipe, epochs, seed and data; and ``python -c "import
    torch"``. Ratios are medians of the per-round ratios; the breakdown is the medians of each
    run's result.json timings_s next to the plain script's own phases; test accuracies are
    per round (seed) with their mean. The startup goal: the speedrun's first step within 2x
    (import torch + the plain script's data load)."""
    extra = WHOLE_QUICK if args.quick else []
    work = out / "whole"

    settings: dict[str, list[str]] = {}  # plain_train.py flags for initlab's own settings

    def commands_for(seed: int) -> tuple[dict, dict]:
        commands, plains = {}, {}
        for name, overrides in WHOLE_COMMANDS.items():
            overrides = [*overrides, f"seed={seed}"]
            cfg = compose_cfg(*overrides, f"data.data_dir={data_dir}", *extra)
            # both processes on the bench's device (train.py's accelerator=auto would take a GPU)
            commands[name] = [sys.executable, str(ROOT / "scripts" / "train.py"), *overrides,
                              f"data.data_dir={data_dir}", f"trainer.accelerator={args.device}",
                              *extra]
            plains[name] = [sys.executable, str(ROOT / "scripts" / "plain_train.py"),
                            *plain_args(cfg, data_dir), "--device", args.device]
            in_effect = channels_last_in_effect(cfg.channels_last, instantiate(cfg.model),
                                                torch.device(args.device))
            settings[name] = ["--no-normalize-once",
                              "--channels-last" if in_effect else "--no-channels-last"]
        return commands, plains

    rounds_commands: dict[str, list[str]] = {n: [] for n in WHOLE_COMMANDS}
    rounds_plain: dict[str, list[str]] = {n: [] for n in WHOLE_COMMANDS}
    import_torch = [sys.executable, "-c", "import torch"]
    if not args.quick:  # untimed: the libraries' files into the page cache (no cold round 1)
        timed_process([sys.executable, "-c", "import initlab.train"])
    times: dict[str, list[float]] = {"import_torch": []}
    ratios: dict[str, list[float]] = {}
    parts: dict[str, dict[str, list[dict]]] = {n: {"initlab": [], "plain": []}
                                               for n in WHOLE_COMMANDS}
    acc: dict[str, dict[str, list]] = {n: {"initlab": [], "plain": []} for n in WHOLE_COMMANDS}
    faults: dict[str, list[int]] = {"retained": [], "glibc_defaults": []}  # plain speedrun's fit
    for r in range(args.rounds):
        commands, plains = commands_for(r)
        for name in commands:
            rounds_commands[name].append(" ".join(commands[name][1:]))
            rounds_plain[name].append(" ".join(plains[name][1:]))
            run_dir, plain_json = work / f"{name}-{r}", work / f"{name}-{r}-plain.json"
            glibc_json = work / f"{name}-{r}-plain-glibc-defaults.json"
            settings_json = work / f"{name}-{r}-plain-initlab-settings.json"
            variants = [("initlab", commands[name] + [f"hydra.run.dir={run_dir}"]),
                        ("plain", plains[name] + ["--json", str(plain_json)]),
                        ("plain_initlab_settings",
                         plains[name] + settings[name] + ["--json", str(settings_json)])]
            if name == "speedrun":  # what retain_freed_memory gains a plain script
                variants.append(("plain_glibc_defaults", plains[name] + [
                    "--no-retain-freed-memory", "--json", str(glibc_json)]))
            seconds = {}
            for variant, cmd in variants[r % len(variants):] + variants[:r % len(variants)]:
                plain_json.parent.mkdir(parents=True, exist_ok=True)
                seconds[variant] = timed_process(cmd)
            times.setdefault(name, []).append(seconds["initlab"])
            times.setdefault(f"{name}_plain", []).append(seconds["plain"])
            ratios.setdefault(f"whole_{name}", []).append(seconds["initlab"] / seconds["plain"])
            # what the framework costs, and what initlab's settings cost a plain script
            times.setdefault(f"{name}_plain_initlab_settings", []).append(
                seconds["plain_initlab_settings"])
            ratios.setdefault(f"whole_{name}_vs_initlab_settings", []).append(
                seconds["initlab"] / seconds["plain_initlab_settings"])
            ratios.setdefault(f"{name}_initlab_settings_vs_fastest", []).append(
                seconds["plain_initlab_settings"] / seconds["plain"])
            acc[name].setdefault("plain_initlab_settings", []).append(
                json.loads(settings_json.read_text())["test_acc"])
            result = json.loads((run_dir / "result.json").read_text())
            plain = json.loads(plain_json.read_text())
            if "plain_glibc_defaults" in seconds:
                glibc = json.loads(glibc_json.read_text())
                times.setdefault(f"{name}_plain_glibc_defaults", []).append(
                    seconds["plain_glibc_defaults"])
                ratios.setdefault("plain_glibc_defaults_vs_retained", []).append(
                    seconds["plain_glibc_defaults"] / seconds["plain"])
                faults["glibc_defaults"].append(glibc["fit_page_faults"])
                faults["retained"].append(plain["fit_page_faults"])
            parts[name]["initlab"].append(result["timings_s"])
            parts[name]["plain"].append(plain["phases_s"])
            acc[name]["initlab"].append(result["metrics"].get("test/acc"))
            acc[name]["plain"].append(plain["test_acc"])
        times["import_torch"].append(timed_process(import_torch))

    def medians(rows: list[dict]) -> dict[str, float]:
        return {k: statistics.median(row[k] for row in rows)
                for k in BREAKDOWN if all(k in row for row in rows)}

    result = {"commands": rounds_commands, "plain_commands": rounds_plain,
              "plain_commands_initlab_settings": {n: [f"{c} {' '.join(settings[n])}" for c in cs]
                                                  for n, cs in rounds_plain.items()},
              "seconds": {}, "spread": {}, "ratios": {}, "ratio_spread": {},
              "breakdown": {n: {v: medians(rows) for v, rows in p.items()}
                            for n, p in parts.items()},
              "test_acc": acc, "rounds": args.rounds,
              "plain_fit_page_faults": {k: statistics.median(v) for k, v in faults.items() if v},
              "test_acc_mean": {n: {v: statistics.mean(a) for v, a in by.items()}
                                for n, by in acc.items()}}
    result["goals"] = {f"speedrun mean test accuracy >= {SPEEDRUN_ACCURACY:g} over seeds "
                       f"0-{args.rounds - 1}":
                       result["test_acc_mean"]["speedrun"]["initlab"] >= SPEEDRUN_ACCURACY}
    for name, samples in times.items():
        result["seconds"][name], result["spread"][name] = median_and_spread(samples)
    for name, samples in ratios.items():
        result["ratios"][name], result["ratio_spread"][name] = median_and_spread(samples)
    speedrun = result["breakdown"]["speedrun"]
    floor = result["seconds"]["import_torch"] + speedrun["plain"]["data_load"]
    result["startup"] = {"first_step": speedrun["initlab"].get("first_step"),
                         "plain_first_step": speedrun["plain"].get("first_step"),
                         "import_torch": result["seconds"]["import_torch"],
                         "plain_data_load": speedrun["plain"]["data_load"], "floor": floor}
    if result["startup"]["first_step"] is not None:
        result["ratios"]["first_step_vs_floor"] = result["startup"]["first_step"] / floor
    return result


def print_whole(result: dict) -> None:
    """The whole-process case's breakdown: initlab's timings_s next to the plain phases."""
    names = list(result["breakdown"])
    print(f"\n  whole-process breakdown, seconds (medians of {result['rounds']} rounds; startup, "
          "first_step, total from process start)")
    print(f"  {'':<18}" + "".join(f"{n + ' initlab':>18}{'plain':>9}" for n in names))
    for key in BREAKDOWN:
        cells = []
        for n in names:
            row = result["breakdown"][n]
            cells += [row["initlab"].get(key), row["plain"].get(key)]
        print(f"  {key:<18}" + "".join(
            f"{'-' if v is None else f'{v:.2f}':>{18 if i % 2 == 0 else 9}}"
            for i, v in enumerate(cells)))
    for n in names:
        mean = result["test_acc_mean"][n]
        print(f"  {n}: whole/plain {result['ratios'][f'whole_{n}']:.3f}x (per-round ratios "
              f"spread {result['ratio_spread'][f'whole_{n}']:.0%}); test accuracy per seed "
              f"initlab {result['test_acc'][n]['initlab']} (mean {mean['initlab']:.4f}), plain "
              f"{result['test_acc'][n]['plain']} (mean {mean['plain']:.4f})")
    faults = result.get("plain_fit_page_faults", {})
    if faults:
        print(f"  plain speedrun, minor page faults in fit (medians): glibc's malloc defaults "
              f"{faults['glibc_defaults']:.0f}, retain_freed_memory {faults['retained']:.0f}")
    for goal, met in result["goals"].items():
        print(f"  goal {goal}: {'ok' if met else 'MISSED'}")
    s = result["startup"]
    print(f"  startup: first step at {s['first_step']:.2f} s (plain {s['plain_first_step']:.2f} s);"
          f" import torch {s['import_torch']:.2f} s + data load {s['plain_data_load']:.2f} s = "
          f"{s['floor']:.2f} s: goal first step <= 2x that")


def case_formats(args, data_dir: Path, out: Path) -> dict:
    """The default CNN's memory formats, paired: two raw loops from the same initial weights,
    one channels-first and one channels-last, alternating 20-step segments (order swapped every
    segment) at the speedrun's batch (256) and the default's (128). ``channels_last_vs_first``:
    the channels-last loop's seconds over the channels-first loop's, per batch size: what
    ``channels_last=auto`` is chosen by."""
    cfg = compose_cfg(*training_overrides(data_dir, 1, out, args.quick, args.device))
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    images, labels = (t.to(args.device) for t in datamodule.splits["train"])
    segments, steps = (4, 5) if args.quick else (20, 20)
    result = {"ratios": {}, "seconds": {}}
    for batch_size in (256, 128):
        torch.manual_seed(cfg.seed)
        base = instantiate(cfg.model).to(args.device)
        loops = {}
        for name, memory_format in (("first", torch.contiguous_format),
                                    ("last", torch.channels_last)):
            model = copy.deepcopy(base).to(memory_format=memory_format)
            loops[name] = RawSteps(model, instantiate(cfg.optim)(model.parameters()), images,
                                   labels, batch_size, cfg.seed)
            loops[name](2)  # warm-up
        seconds = {"first": 0.0, "last": 0.0}
        for segment in range(segments):
            for name in ("first", "last") if segment % 2 == 0 else ("last", "first"):
                seconds[name] += loops[name](steps)
        result["seconds"].update({f"batch{batch_size}_channels_{n}": v for n, v in seconds.items()})
        result["ratios"][f"batch{batch_size}_channels_last_vs_first"] = seconds["last"] / seconds["first"]
    return result


def case_compile(args, data_dir: Path, out: Path) -> dict:
    """torch.compile (opt-in ``compile=true``) against eager, after the compile warm-up."""
    steps = 20 if args.quick else 200
    base = training_overrides(data_dir, steps, out, args.quick, args.device) + ["callbacks=none"]
    eager, compiled = compose_cfg(*base), compose_cfg(*base, "compile=true")
    datamodule = instantiate(eager.data)
    datamodule.setup()
    times = interleave({"eager": lambda: initlab_fit(eager, datamodule)[0],
                        "compiled": lambda: initlab_fit(compiled, datamodule)[0]}, args.rounds)
    return summarize(times, steps, {"compile": ("compiled", "eager")})


def case_jacobian(args, data_dir: Path, out: Path) -> dict:
    """The default probe (callbacks=default) at step 0 of the default CNN, with and without its
    Jacobian singular values, against one training step: the Jacobian's cost in steps."""
    from initlab.monitors.stats import probe

    cfg = compose_cfg(*training_overrides(data_dir, 1, out, args.quick, args.device),
                      "callbacks=default")
    device = torch.device(args.device)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    monitor = instantiate(cfg.callbacks.probe)
    x, y = (t.to(device) for t in datamodule.probe_batch(monitor.num_examples))
    images, labels = (t.to(device) for t in datamodule.splits["train"])
    torch.manual_seed(cfg.seed)
    model = apply_init(instantiate(cfg.model), **cfg.init, activation=cfg.model.activation)
    trained = instantiate(cfg.model)  # steps train a copy: the probes see the model at init
    trained.load_state_dict(model.state_dict())
    model, trained = model.to(device), trained.to(device)
    optimizer = instantiate(cfg.optim)(trained.parameters())
    steps = 5 if args.quick else 50

    def timed(fn) -> Callable[[], float]:
        def run() -> float:
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            return time.perf_counter() - start
        return run

    times = interleave({
        "train_step": lambda: RawSteps(trained, optimizer, images, labels,
                                       cfg.data.batch_size, cfg.seed)(steps) / steps,
        "probe": timed(lambda: probe(model, x, y, model.activation)),
        "probe_jacobian": timed(lambda: probe(model, x, y, model.activation,
                                              jacobian=monitor.jacobian)),
    }, args.rounds)
    result = summarize(times, 1, {"probe_vs_step": ("probe", "train_step"),
                                  "probe_jacobian_vs_step": ("probe_jacobian", "train_step")})
    seconds = result["seconds"]
    result["jacobian_ms"] = 1000 * (seconds["probe_jacobian"] - seconds["probe"])
    result["ratios"]["jacobian_vs_step"] = (seconds["probe_jacobian"] - seconds["probe"]) \
        / seconds["train_step"]
    return result


def case_shapeset(args, data_dir: Path, out: Path) -> dict:
    """Shapeset-3x2 generation on --device, in the training stream's chunks, against one SGD
    step of the paper's 5 x 1000 tanh MLP at batch 10 (its 1024 inputs, 9 classes) in the same
    process: generating a step's 10 images should cost under 10% of the step."""
    from initlab.data.shapes import ShapeGenerator
    from initlab.data.shapeset import ShapesetDataModule, generate_chunk
    from initlab.models import MLP

    chunk = ShapesetDataModule().chunk_size
    n = chunk * (2 if args.quick else 16)
    steps = 20 if args.quick else 300
    device = torch.device(args.device)
    gen = ShapeGenerator(device)

    def generate() -> float:
        sync(device)
        start = time.perf_counter()
        for k in range(n // chunk):
            generate_chunk(gen, chunk, 0, "train", 0, 0, k)
        sync(device)
        return time.perf_counter() - start

    torch.manual_seed(0)
    model = apply_init(MLP(depth=5, width=1000, activation="tanh", in_features=1024,
                           num_classes=9), "xavier").to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    images, labels = generate_chunk(gen, steps * 10, 0, "val", 0, 0, 0)
    x_all = (to_unit(images) * 2 - 1).split(10)
    y_all = labels.split(10)

    def mlp_steps() -> float:
        sync(device)
        start = time.perf_counter()
        for x, y in zip(x_all, y_all):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        sync(device)
        return time.perf_counter() - start

    times = interleave({"generate": generate, "mlp_steps": mlp_steps}, args.rounds)
    result = summarize(times, steps, {})
    rate = n / result["seconds"]["generate"]
    step_s = result["seconds"]["mlp_steps"] / steps
    result["images_per_s"] = {"generate": rate}
    result["mlp_step_s"] = step_s
    result["ratios"] = {"shapeset_batch10_vs_step": 10 / rate / step_s,
                        "shapeset_rate_vs_100k": rate / 100_000}
    return result


CASES = {"framework": case_framework_and_monitors, "data": case_data,
         "speedrun": case_speedrun, "startup": case_startup, "compile": case_compile,
         "jacobian": case_jacobian, "whole": case_whole, "shapeset": case_shapeset,
         "formats": case_formats}
DEFAULT_CASES = ["framework", "data", "speedrun", "startup", "jacobian"]
TARGETS = {"framework": ("<=", 1.05), "monitors_default": ("<=", 1.05),
           "augmented_vs_per_image": (">=", 20.0), "speedrun_time": ("<=", 1.2),
           "whole_speedrun": ("<=", 1.15), "first_step_vs_floor": ("<=", 2.0),
           "shapeset_batch10_vs_step": ("<=", 0.10), "shapeset_rate_vs_100k": (">=", 1.0)}


def print_table(results: dict) -> None:
    print(f"\n{'case':<26}{'figure':>14}  target   spread")
    for case, result in results.items():
        for name, ratio in result.get("ratios", {}).items():
            op, goal = TARGETS.get(name, ("", None))
            ok = "" if goal is None else ("ok" if (ratio <= goal if op == "<=" else ratio >= goal)
                                         else "MISSED")
            extra = ""
            if name in result.get("interval", {}):  # the framework case's paired ratios
                low, high = result["interval"][name]
                spread = result["spread"][name]
                extra = (f" per-fit spread {spread:.0%}{' (noisy)' if spread > SPREAD_WARNING else ''}"
                         f", 95% interval {low:.3f}-{high:.3f}")
            print(f"{name:<26}{ratio:>13.3f}x  {op}{goal or '':<6} {ok}{extra}")
        for name, secs in result.get("seconds", {}).items():
            if name not in result.get("spread", {}):
                print(f"  {case}/{name:<20}{secs:>11.3f} s")
                continue
            spread = result["spread"][name]
            flag = "  (noisy)" if spread > SPREAD_WARNING else ""
            print(f"  {case}/{name:<20}{secs:>11.3f} s  spread {spread:.0%}{flag}")
        for name, diff in result.get("max_weight_diff", {}).items():
            print(f"  {case}/{name:<20} fit vs its raw loop, largest weight difference {diff:.1e}")
        for name, rate in result.get("images_per_s", {}).items():
            print(f"  {case}/{name:<20}{rate:>11.0f} images/s")
        if "mean_acc" in result:
            print(f"  speedrun mean test accuracy: initlab {result['mean_acc']:.4f}, "
                  f"raw loop {result['raw_mean_acc']:.4f} over {len(result['runs'])} seeds; "
                  f"training {result['training_s']:.2f} s (median)")
            for goal, met in result.get("goals", {}).items():
                print(f"  goal {goal}: {'ok' if met else 'MISSED'}")
            for r in result["runs"]:
                print(f"    seed {r['seed']}: initlab {r['initlab_s']:.2f} s {r['initlab_acc']:.4f}"
                      f" | raw {r['raw_s']:.2f} s {r['raw_acc']:.4f} | paired ratio "
                      f"{r['ratio']:.3f}")
        if "breakdown" in result:
            print_whole(result)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=DEFAULT_CASES)
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per case (3)")
    parser.add_argument("--seeds", type=int, default=5, help="speedrun seeds")
    parser.add_argument("--out", type=Path, default=Path("bench.json"))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where initlab and the raw loops train (cpu)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device cuda: torch {torch.__version__} sees no CUDA GPU "
                     "(torch.cuda.is_available() is False)")
    args.rounds = args.rounds or (1 if args.quick else 3)
    retain_freed_memory()  # as initlab.train.run does: for the raw loops too
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthetic = synthetic_mnist(tmp / "data", 6_000 if args.quick else 60_000, 1_000)
        for case in args.cases:
            data_dir = synthetic
            if case in ("speedrun", "whole"):
                data_dir = tmp / "data" if args.quick else ROOT / "data"
            print(f"[bench] {case} ...", flush=True)
            results[case] = CASES[case](args, data_dir, tmp / "out")
    results["machine"] = {**machine(args.device), "quick": args.quick}
    print_table({k: v for k, v in results.items() if k != "machine"})
    atomic_write(args.out, json.dumps(results, indent=2).encode())
    print(f"\nwrote {args.out}")
    return results


if __name__ == "__main__":
    main()
