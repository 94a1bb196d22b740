"""Checkpoints that are never half written, a save on interruption, and clear errors for
unreadable checkpoints and unwritable output folders."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

MIN_FREE_BYTES = 200 * 2**20  # checkpoints, events and logs of one run fit in this


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes to a temporary name in the same folder, then renames; ``seconds`` adds up the
    time spent writing (result.json's timings)."""

    seconds = 0.0

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        start = time.perf_counter()
        try:
            self._save(checkpoint, path, storage_options)
        finally:
            self.seconds += time.perf_counter() - start

    def _save(self, checkpoint, path, storage_options) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


class SaveOnInterrupt(L.Callback):
    """Ctrl-C or SIGTERM (a cluster scheduler's pre-emption): save ``interrupted.ckpt`` in the
    checkpoint folder before Lightning shuts down, so ``ckpt_path=`` can resume the run."""

    def __init__(self, dirpath: str | Path):
        self.dirpath = Path(dirpath)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            path = self.dirpath / "interrupted.ckpt"
            trainer.save_checkpoint(path)
            if trainer.is_global_zero:
                print(f"interrupted at step {trainer.global_step}: resume with ckpt_path={path}")


def check_checkpoint(path: str | Path) -> None:
    """Fail before training, naming the file, when a checkpoint cannot be resumed from."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"ckpt_path={str(path)!r} does not exist (or is not a file)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated zip, garbage bytes, wrong format: all unreadable
        raise ValueError(f"ckpt_path={str(path)!r} is not a readable checkpoint (truncated or "
                         f"corrupted?): {type(err).__name__}: {err}") from err
    missing = {"state_dict", "optimizer_states", "loops"} - set(checkpoint)
    if missing:
        raise ValueError(f"ckpt_path={str(path)!r} is not a Lightning training checkpoint: "
                         f"it lacks {sorted(missing)}")


def check_output_dir(path: str | Path, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    """Fail before training when the run folder cannot be written or its disk is nearly full."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"initlab")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"output_dir={str(path)!r} is not writable: {err.strerror or err}") from err
    free = shutil.disk_usage(path).free
    if free < min_free_bytes:
        raise ValueError(f"output_dir={str(path)!r} has {free / 2**20:.0f} MiB free, less than "
                         f"the {min_free_bytes / 2**20:.0f} MiB a run needs: free some space or "
                         "point hydra.run.dir elsewhere")
