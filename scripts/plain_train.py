"""The plain-PyTorch reference for scripts/bench.py's whole-process case: the fastest script of a
``scripts/train.py`` recipe a careful engineer writes with nothing but torch and numpy (no
Lightning, Hydra, torchvision or initlab), so a whole ``python scripts/train.py ...`` process
can be timed against it.

    python scripts/plain_train.py --data-dir data --epochs 2 --batch-size 256 --lr 0.01 \\
        --betas 0.7 0.9 --pct-start 0.1 --seed 1       # experiment=speedrun's recipe

The recipe is an initlab run's: the four IDX files read with numpy; initlab's 55k/5k split
(fixed split seed) and data order (a permutation per epoch from the run seed's stream); pixels
scaled to [0, 1] and standardised with MNIST's mean and std; the default CNN (24/32 channels,
5x5/3x3 kernels, 256 hidden, ReLU) with PyTorch's default init, reset once more as
``init=default`` does, so one seed gives initlab's initial weights; Adam, one-cycle on the LR
only (per step); the validation split evaluated after every epoch and the test set at the end;
with ``--noise``/``--skew`` levels (the ``robustness`` config), the corrupted copies of the test
set, each the same images initlab's corrupted sets hold (the same seeded draws), by accuracy.

Its speed choices, each a flag, each the faster of its two settings as measured (docs/performance.md):
- ``--no-normalize-once`` (the default): batches standardised from the uint8 splits as they are
  sliced; ``--normalize-once`` standardises every split to float once at load, and measured
  1-3% slower (whole processes, 2026-12-01, 2-core CPU);
- ``--channels-last`` (on for the CPU, off for CUDA: what measured fastest, docs/performance.md): the conv
  weights, and so the activations, in channels-last memory format;
- ``--retain-freed-memory`` (on): glibc's malloc keeps freed memory, so steps reuse it instead
  of page-faulting it back, as an initlab run does;
- ``--freeze-gc`` (on): the collector is off while numpy and torch import, and the objects alive
  before training (torch's: ~180k) stay out of its full passes to the end, as an initlab run
  keeps its libraries' out (each pass over them, and the one at exit, cost ~0.2 s on the 2-core
  CPU; ``import torch`` took 1.8-2.1 s with the collector off against 2.2-2.4 s on);
- ``--eval-batch-size 256`` (the default; the bench passes initlab's ``eval_batch_size=auto``
  in effect): evaluation at 1000 took the CNN's activations past glibc's 32 MiB mmap threshold,
  fresh pages every batch, and a pass of the test set about twice as long (2-core CPU);
- batches sliced by index from tensors on the device, the per-epoch order moved there once;
  zero_grad(set_to_none); nothing synchronises the host inside an epoch;
- corrupted test sets: the noise levels draw their common N(0, 1) bank once (every level's
  generator starts from the same seed); a shear's sampling grid is x + shear * y and y (no
  affine_grid); each set is corrupted into one preallocated tensor.
``--no-normalize-once`` with initlab's memory format is the script with initlab's exact
settings (bench.py's ``plain_initlab_settings``; today the same as the fastest). What it
leaves out is what the framework adds: checkpoints, TensorBoard, monitors, progress lines,
config composition.

Prints the test accuracy and where the time went; ``--json PATH`` writes the same as
``{"test_acc", "corrupted_acc", "settings", "fit_page_faults", "phases_s": {startup, data_load,
build, first_step, fit, validation, test, robustness, total}}``: the corrupted sets'
accuracies by initlab's metric names (``test_corrupt/noise_0.1``), the speed settings in effect,
the minor page faults during fit, and seconds (``validation`` inside ``fit``; ``robustness``, the
corrupted sets, only with levels; ``startup``, ``first_step`` and ``total`` counted from process
start).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

# --freeze-gc (the default): no collection passes while numpy and torch import either
if "--no-freeze-gc" not in sys.argv:
    gc.disable()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

MEAN, STD = 0.1307, 0.3081  # initlab.data.mnist's
SPLIT_SEED, NUM_VAL = 12345, 5_000
DATA_ORDER, AUGMENTATION = 0, 1  # initlab.utils' streams for the data order and corruptions
CORRUPT_CHUNK, NOISE_BANK = 1000, 1 << 22  # CorruptedBatches.CHUNK, Augment.NOISE_BANK


def process_age_s() -> float:
    """Seconds since this process started (Linux /proc; 0 elsewhere), as initlab measures it."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def stream_seed(seed: int, purpose: int, *keys: int) -> int:
    """initlab.utils.stream_seed: the seed of one random stream of the run ``seed``."""
    words = np.random.SeedSequence([seed, purpose, *keys]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def retain_freed_memory() -> bool:
    """initlab.utils.retain_freed_memory: glibc's malloc keeps blocks under 32 MiB and up to
    1 GiB at the heap's top, so steps reuse freed memory instead of page-faulting it back."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return mallopt(-3, 32 << 20) == 1 and mallopt(-1, 1 << 30) == 1  # M_MMAP_/M_TRIM_THRESHOLD


def minor_page_faults() -> int:
    """This process's minor page faults so far (pages the OS had to hand back to it)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def read_idx(path: Path) -> torch.Tensor:
    data = np.fromfile(path, dtype=np.uint8)
    ndim = int(data[3])
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i].tobytes(), "big") for i in range(ndim)]
    return torch.from_numpy(data[4 + 4 * ndim:].reshape(shape))


class CNN(nn.Module):
    """initlab.models.CNN with its defaults (no batchnorm, no dropout)."""

    def __init__(self, channels=(24, 32), kernel_sizes=(5, 3), hidden=256):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels[0], kernel_sizes[0])
        self.conv2 = nn.Conv2d(channels[0], channels[1], kernel_sizes[1])
        size = ((28 - kernel_sizes[0] + 1) // 2 - kernel_sizes[1] + 1) // 2
        self.fc1 = nn.Linear(channels[1] * size * size, hidden)
        self.out = nn.Linear(hidden, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.out(F.relu(self.fc1(x.flatten(1))))


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a phase's time holds its work."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def standardize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W) -> standardised float (N, 1, H, W); a float input is already done."""
    if images.is_floating_point():
        return images
    return (images.unsqueeze(1).float().div_(255) - MEAN) / STD


@torch.no_grad()
def accuracy(model, images, labels, batch_size: int, prepare=standardize) -> float:
    model.eval()
    correct = sum(int((model(prepare(images[i: i + batch_size])).argmax(1)
                       == labels[i: i + batch_size]).sum())
                  for i in range(0, len(labels), batch_size))
    model.train()
    return correct / len(labels)


def corrupted(images: torch.Tensor, kind: str, level: float, seed: int,
              banks: dict) -> torch.Tensor:
    """The test set (uint8) corrupted as initlab's ``robustness`` corrupts it, floats in [0, 1]:
    in chunks of CORRUPT_CHUNK from one generator of the (seed, AUGMENTATION, 0, 0) stream,
    Gaussian noise of std ``level`` (a window at a random offset of an N(0, 1) bank, clipped)
    or a horizontal shear by an angle drawn in [-level, level] degrees (bilinear, zero fill)."""
    if level == 0:  # initlab's Augment at level 0 is the identity: no draws, no resampling
        return images.unsqueeze(1).float().div_(255)
    device = images.device
    stream = stream_seed(seed, AUGMENTATION, 0, 0)
    gen = torch.Generator(device=device).manual_seed(stream)
    out = torch.empty(len(images), 1, *images.shape[1:], device=device)
    if kind == "noise":
        offsets = torch.Generator().manual_seed(stream)
        if device not in banks:  # every level's generator starts from this seed: one draw
            banks[device] = torch.randn(NOISE_BANK, device=device, generator=gen)
        bank = banks[device]
    else:
        height, width = images.shape[1:]
        ys = ((torch.arange(height, device=device) * 2 + 1) / height - 1).view(height, 1)
        xs = ((torch.arange(width, device=device) * 2 + 1) / width - 1).view(1, width)
    for i in range(0, len(images), CORRUPT_CHUNK):
        x = images[i: i + CORRUPT_CHUNK].unsqueeze(1).float().div_(255)
        n = len(x)
        if kind == "noise":
            start = int(torch.randint(0, NOISE_BANK - x.numel() + 1, (1,), generator=offsets))
            noise = bank[start: start + x.numel()].view(x.shape)
            torch.add(x, noise, alpha=level, out=out[i: i + n]).clamp_(0.0, 1.0)
            continue
        uniform = torch.rand(n, device=device, generator=gen) * 2 - 1
        shear = torch.tan(uniform * math.radians(level)).view(n, 1, 1)
        for size in (n, n, 2 * n):  # initlab's rotation, zoom and shift draws (all zero here)
            torch.rand(size, device=device, generator=gen)
        grid = torch.empty(n, height, width, 2, device=device)
        torch.add(xs, shear * ys, out=grid[..., 0])
        grid[..., 1] = ys
        out[i: i + n] = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                                      align_corners=False)
    return out


def main(argv: list[str] | None = None) -> dict:
    startup = process_age_s()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--eval-batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--betas", type=float, nargs=2, default=(0.7, 0.9))
    parser.add_argument("--pct-start", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--channels", type=int, nargs=2, default=(24, 32))
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where the data, the model and every step live")
    parser.add_argument("--normalize-once", action=argparse.BooleanOptionalAction, default=False,
                        help="standardise every split once at load (default: per batch, as "
                        "initlab; measured faster)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="channels-last conv weights (default: on for cpu, off for cuda)")
    parser.add_argument("--noise", type=float, nargs="*", default=[], metavar="STD",
                        help="corrupted test sets: Gaussian noise of these stds (robustness.noise)")
    parser.add_argument("--skew", type=float, nargs="*", default=[], metavar="DEGREES",
                        help="corrupted test sets: shear by these angles (robustness.skew)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--retain-freed-memory", action=argparse.BooleanOptionalAction,
                        default=True, help="glibc malloc keeps freed memory, as an initlab run "
                        "does (initlab.utils.retain_freed_memory); --no-... leaves glibc's defaults")
    parser.add_argument("--freeze-gc", action=argparse.BooleanOptionalAction, default=True,
                        help="keep the objects alive before training out of the garbage "
                        "collector's full passes (gc.freeze), as an initlab run does")
    args = parser.parse_args(argv)
    for flag, levels, limit in (("--noise", args.noise, math.inf), ("--skew", args.skew, 90)):
        if any(not 0 <= level < limit for level in levels):
            parser.error(f"{flag} {levels}: each level must be >= 0 and < {limit}")
    phases = {"startup": startup}
    if args.retain_freed_memory:
        retain_freed_memory()

    start = time.perf_counter()
    raw = args.data_dir / "MNIST" / "raw"
    images = read_idx(raw / "train-images-idx3-ubyte")
    labels = read_idx(raw / "train-labels-idx1-ubyte").long()
    test_x = read_idx(raw / "t10k-images-idx3-ubyte")
    test_y = read_idx(raw / "t10k-labels-idx1-ubyte").long()
    n_val = NUM_VAL if len(labels) == 60_000 else max(1, len(labels) // 12)
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    device = torch.device(args.device)
    train_x, train_y, val_x, val_y, test_x, test_y = (t.to(device) for t in (
        images[perm[n_val:]], labels[perm[n_val:]], images[perm[:n_val]], labels[perm[:n_val]],
        test_x, test_y))
    test_uint8 = test_x  # what the corrupted sets corrupt
    if args.normalize_once:
        train_x, val_x, test_x = (standardize(t) for t in (train_x, val_x, test_x))
    sync(device)
    phases["data_load"] = time.perf_counter() - start

    start = time.perf_counter()
    torch.manual_seed(args.seed)
    model = CNN(args.channels, hidden=args.hidden)
    for layer in (model.conv1, model.conv2, model.fc1, model.out):  # init=default resets again
        layer.reset_parameters()
    channels_last = device.type == "cpu" if args.channels_last is None else args.channels_last
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=tuple(args.betas))
    per_epoch = math.ceil(len(train_y) / args.batch_size)
    total_steps = per_epoch * args.epochs
    if args.max_steps > 0:
        total_steps = min(total_steps, args.max_steps)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=total_steps, pct_start=args.pct_start,
        cycle_momentum=False)
    phases["build"] = time.perf_counter() - start

    if args.freeze_gc:  # to the end: the process exits without walking them either
        gc.freeze()
    gc.enable()
    start, faults_before = time.perf_counter(), minor_page_faults()
    step, val_acc, validation = 0, math.nan, 0.0
    for epoch in range(args.epochs):
        gen = torch.Generator().manual_seed(stream_seed(args.seed, DATA_ORDER, epoch))
        order = torch.randperm(len(train_y), generator=gen).to(device)
        for i in range(0, len(order), args.batch_size):
            if step == total_steps:  # max_steps inside an epoch: no validation, as Lightning
                break
            idx = order[i: i + args.batch_size]
            x, y = standardize(train_x[idx]), train_y[idx]
            if step == 0:
                phases["first_step"] = process_age_s()
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
        else:
            begin = time.perf_counter()
            val_acc = accuracy(model, val_x, val_y, args.eval_batch_size)
            validation += time.perf_counter() - begin
            continue
        break
    sync(device)
    phases["fit"] = time.perf_counter() - start
    fit_page_faults = minor_page_faults() - faults_before
    phases["validation"] = validation  # inside fit

    start = time.perf_counter()
    test_acc = accuracy(model, test_x, test_y, args.eval_batch_size)
    phases["test"] = time.perf_counter() - start

    corrupted_acc, banks = {}, {}
    start = time.perf_counter()
    for kind, levels in (("noise", args.noise), ("skew", args.skew)):
        for level in levels:
            images = corrupted(test_uint8, kind, level, args.seed, banks)
            corrupted_acc[f"test_corrupt/{kind}_{level:g}"] = accuracy(
                model, images, test_y, args.eval_batch_size, prepare=lambda x: (x - MEAN) / STD)
    if corrupted_acc:
        sync(device)
        phases["robustness"] = time.perf_counter() - start
    phases["total"] = process_age_s()
    print(f"plain: {step} steps  val accuracy {val_acc:.4f}  test accuracy {test_acc:.4f}  "
          f"total {phases['total']:.1f} s")
    print("  " + "  ".join(f"{k} {v:.2f} s" for k, v in phases.items()))
    if corrupted_acc:
        print("  corrupted test sets: " + "  ".join(
            f"{name.split('/')[1]} {acc:.4f}" for name, acc in corrupted_acc.items()))
    settings = {"device": args.device, "channels_last": channels_last,
                "normalize_once": args.normalize_once,
                "retain_freed_memory": args.retain_freed_memory, "freeze_gc": args.freeze_gc}
    result = {"test_acc": test_acc, "corrupted_acc": corrupted_acc, "val_acc": val_acc,
              "steps": step, "settings": settings,
              "fit_page_faults": fit_page_faults,
              "phases_s": {k: round(v, 3) for k, v in phases.items()}}
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
