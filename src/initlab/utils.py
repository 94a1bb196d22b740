"""Small helpers shared across initlab: atomic file writes, the layers that carry weights, the
seed streams and the malloc setting for training."""

from __future__ import annotations

import ctypes
import gc
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

WEIGHT_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def weight_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every Conv/Linear layer by its module name (output layer included): the layers that
    init schemes set, L1/L2 penalise and the monitors measure."""
    return {name: m for name, m in model.named_modules() if isinstance(m, WEIGHT_LAYER_TYPES)}


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same folder, then rename: no half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; data files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# What a derived random stream is for: one run seed, independent streams.
DATA_ORDER, AUGMENTATION, DROPOUT, SHAPESET = 0, 1, 2, 3


def stream_seed(seed: int, purpose: int, *keys: int) -> int:
    """A 63-bit seed for one stream (``purpose``, then e.g. epoch and rank) of the run ``seed``:
    distinct inputs give independent streams (numpy's SeedSequence hashing), so seed s at epoch
    1 never replays seed s+1 at epoch 0."""
    words = np.random.SeedSequence([seed, purpose, *keys]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def draw_kept_by_state(kept: dict, limit: int, key: tuple, generator: torch.Generator,
                       draw: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``draw()`` (which draws from ``generator``), kept in ``kept`` under ``key`` and the
    generator's state: a later call from the same state returns the kept tensor and leaves the
    generator where the draw left it, as a draw of its own would. Callers share the kept
    tensor: they read it, never write it. The oldest of more than ``limit`` goes."""
    full_key = (*key, generator.get_state().numpy().tobytes())
    entry = kept.get(full_key)
    if entry is None:
        entry = (draw(), generator.get_state())
        if len(kept) >= limit:
            kept.pop(next(iter(kept)))
        kept[full_key] = entry
    else:
        generator.set_state(entry[1])
    return entry[0]


def process_age_s() -> float | None:
    """Seconds since this process started (Linux /proc), or None where that is not known:
    the imports and config composition before a run's own clock starts."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
RETAINED_CHUNK_BYTES = 32 << 20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit
TRIM_THRESHOLD_BYTES = 1 << 30


def retain_freed_memory() -> bool:
    """Let glibc's malloc keep the memory a training step frees, for the next step.

    By default glibc hands freed blocks back to the OS (blocks above an adaptive mmap
    threshold; the top of the heap once more than twice that is free), and the next step's
    tensors of the same sizes take fresh pages, each a page fault. On the 2-core CPU machine a
    default-CNN step then took from 7 to 5.3k page faults and 0.3-12 ms in the kernel, by chance
    of the heap's history; kept, 1-55 faults and 0.2-0.4 ms. Blocks under 32 MiB come from the
    heap, and up to 1 GiB free at its top is kept. Process-wide; returns whether it took
    effect (False where the C library has no glibc mallopt)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return (mallopt(_M_MMAP_THRESHOLD, RETAINED_CHUNK_BYTES) == 1
            and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1)



def keep_libraries_out_of_gc() -> None:
    """From here, the objects alive now (the imported libraries': ~400k after Lightning's
    imports) are left out of the garbage collector's full passes: a full pass over them cost
    0.3-0.6 s on the 2-core CPU, and a fit's allocations trigger one every few hundred steps.
    :func:`release_libraries_to_gc` undoes it, so what was alive here can still be freed."""
    gc.freeze()


def release_libraries_to_gc() -> None:
    gc.unfreeze()
