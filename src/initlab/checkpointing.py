"""Checkpoints that are never half written, a save on interruption or a scheduler's warning,
a relaunch in the same folder that continues the run, and clear errors for unreadable
checkpoints and unwritable output folders."""

from __future__ import annotations

import io
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from initlab.config import make_writable_folder
from initlab.utils import atomic_write

MIN_FREE_BYTES = 200 * 2**20  # checkpoints, events and logs of one run fit in this


class AtomicCheckpointIO(TorchCheckpointIO):
    """Serialises the checkpoint in memory, writes it to a temporary name in the checkpoint's
    own folder, syncs it and renames it over the old one (:func:`initlab.utils.atomic_write`);
    ``seconds`` adds up the time spent (result.json's ``timings_s.checkpoint_writes``).

    Lightning's own save (``lightning.fabric.utilities.cloud_io._atomic_save``) writes through
    an fsspec transaction whose temporary file lies in the system temporary folder ($TMPDIR):
    where that is another filesystem than the run's (a node-local /tmp on a cluster), the
    commit copies it over the old checkpoint, which is then lost if the copy fails midway.
    """

    seconds = 0.0

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options "
                            f"(got {storage_options!r})")
        start = time.perf_counter()
        try:
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            atomic_write(Path(path), buffer.getvalue())
        finally:
            self.seconds += time.perf_counter() - start


# SLURM's warning before a time limit (sbatch --signal; submitit asks for SIGUSR2)
WARNING_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


class SaveOnInterrupt(L.Callback):
    """Ctrl-C, SIGTERM (a scheduler's pre-emption), or SIGUSR1/SIGUSR2 (a scheduler's warning
    before the time limit): finish the current batch, save ``interrupted.ckpt`` in the checkpoint
    folder and stop, so a relaunch in the same folder (or ``ckpt_path=``) continues the run.

    A warning signal is handled as Lightning handles SIGTERM (stop after the current batch);
    Lightning's own SLURM handler is not used because it saves from inside the signal handler,
    mid-step. :meth:`hand_on` then calls the handler the signal displaced
    (submitit's: requeue the job and exit). ``config`` is saved with every checkpoint so that a
    relaunch can check it continues the same run."""

    def __init__(self, dirpath: str | Path, config: dict | None = None):
        self.dirpath = Path(dirpath)
        self.config = config
        self.signal: int | None = None  # the warning signal received, if any
        self._displaced: dict[int, Any] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        # after Lightning registered its handlers: its teardown puts the displaced ones back
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in WARNING_SIGNALS:
            self._displaced[sig] = signal.signal(sig, self._warned)

    def _warned(self, signum, frame) -> None:
        self.signal = signum
        sigterm = signal.getsignal(signal.SIGTERM)
        if callable(sigterm):  # Lightning's, during fit: stop after the current batch
            sigterm(signal.SIGTERM, frame)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            path = self.dirpath / "interrupted.ckpt"
            trainer.save_checkpoint(path)
            if trainer.is_global_zero:
                print(f"interrupted at step {trainer.global_step}: resume with ckpt_path={path} "
                      "or relaunch the same command in the same folder")

    def hand_on(self) -> int | None:
        """After the save: run the handler a warning signal displaced (submitit's requeues the job
        and exits); return the exit code for the signal (128 + its number), None if none came."""
        if self.signal is None:
            return None
        displaced = self._displaced.get(self.signal)
        if callable(displaced):
            displaced(self.signal, None)
        return 128 + self.signal

    def state_dict(self) -> dict:
        return {"config": self.config}


# keys that may differ between a run and its relaunch: where it resumes from, and the switch itself
RELAUNCH_FREE_KEYS = ("ckpt_path", "auto_resume")


def own_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest of a run folder's ``interrupted.ckpt`` and ``last.ckpt``: what a requeued or
    relaunched job continues from. None in a fresh folder."""
    folder = Path(output_dir) / "checkpoints"
    found = [p for p in (folder / "interrupted.ckpt", folder / "last.ckpt") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def check_same_run(checkpoint: dict, path: str | Path, config: dict) -> None:
    """A folder's own checkpoint is resumed only by the run that wrote it: a different config
    in the same folder (a sweep relaunched into an old sweep folder) is an error, not a silent
    continuation of other settings."""
    saved = checkpoint.get("callbacks", {}).get(SaveOnInterrupt.__qualname__, {}).get("config")
    if saved is None:  # written before configs were saved: nothing to compare
        return
    old, new = _flatten(saved), _flatten(config)
    changed = [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(old.keys() | new.keys())
               if old.get(key) != new.get(key) and not key.startswith(RELAUNCH_FREE_KEYS)]
    if changed:
        raise ValueError(f"{path} holds a checkpoint of a run with another config ({'; '.join(changed[:5])}"
                         f"{'; ...' if len(changed) > 5 else ''}): start in a new folder, or resume it "
                         "there with ckpt_path=, or set auto_resume=false to start over here")


def check_checkpoint(path: str | Path) -> dict:
    """Fail before training, naming the file, when a checkpoint cannot be resumed from; return
    the checkpoint."""
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
    return checkpoint


def check_output_dir(path: str | Path, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    """Fail before training when the run folder cannot be written or its disk is nearly full."""
    path = Path(path)
    try:
        make_writable_folder(path)
    except OSError as err:
        raise ValueError(f"output_dir={str(path)!r} is not writable: {err.strerror or err}") from err
    free = shutil.disk_usage(path).free
    if free < min_free_bytes:
        raise ValueError(f"output_dir={str(path)!r} has {free / 2**20:.0f} MiB free, less than "
                         f"the {min_free_bytes / 2**20:.0f} MiB a run needs: free some space or "
                         "point hydra.run.dir elsewhere")
