"""TensorBoard logging with one events file per run, and the run's HParams record."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from initlab.init import resolve_gain


class RunTensorBoardLogger(TensorBoardLogger):
    """Lightning finalizes the logger after fit and again after test; the stock logger closes
    its writer each time, so the next write opens another events file. This one only flushes;
    ``close()`` ends the file once, when the run is over."""

    _epoch_step: int | None = None

    @rank_zero_only
    def log_metrics(self, metrics, step=None) -> None:
        # Lightning adds "epoch" to each of its log calls: train, validation and epoch-end
        # metrics of one step would give the epoch curve three points at that step.
        if "epoch" in metrics and step is not None:
            if step == self._epoch_step:
                metrics = {k: v for k, v in metrics.items() if k != "epoch"}
            self._epoch_step = step
        super().log_metrics(metrics, step)

    def finalize(self, status: str) -> None:
        if self._experiment is not None:
            self.experiment.flush()
        if status == "success":
            self.save()

    def close(self) -> None:
        if self._experiment is not None:
            self.experiment.close()


def _short(target) -> str:
    """``torch.optim.SGD`` -> ``SGD``; null -> ``none``."""
    return str(target).rsplit(".", 1)[-1] if target else "none"


def hparams_columns(cfg: DictConfig) -> dict[str, object]:
    """The settings a user compares runs by, one short column each (no ``_target_`` paths):
    init scheme and the gain in effect, optimizer and learning rate, activation, model, seed,
    then the other knobs that change training."""
    model, optim, data, init = cfg.model, cfg.optim, cfg.data, cfg.init
    augment = cfg.get("augment") or {}
    columns = {
        "init": init.scheme,
        "init_gain": resolve_gain(init.get("gain"), model.activation, init.scheme),
        "optim": _short(optim.get("_target_")),
        "lr": optim.lr,
        "activation": model.activation,
        "model": _short(model.get("_target_")),
        "seed": cfg.seed,
        "shape": (f"{model.depth}x{model.width}" if "depth" in model
                  else f"{list(model.channels)} {model.hidden}" if "channels" in model else ""),
        "momentum_or_beta1": optim.get("momentum", optim.get("betas", [None])[0]),
        "weight_decay": optim.get("weight_decay"),
        "scheduler": _short((cfg.get("scheduler") or {}).get("_target_")),
        "batch_size": data.batch_size,
        "normalize": str(data.normalize),
        "batchnorm": str(model.get("batchnorm", False)),
        "dropout": model.get("dropout", 0.0),
        "l1": cfg.l1,
        "l2": cfg.l2,
        "augment": " ".join(f"{k}={v}" for k, v in augment.items()
                            if k not in ("_target_", "seed") and v) or "none",
        "max_epochs": cfg.trainer.get("max_epochs"),
        "max_steps": cfg.trainer.get("max_steps"),
    }
    return {k: v for k, v in columns.items() if v is not None}


SESSION_DIR = "hparams"  # the run's HParams session: a run of its own, inside the run's folder


@rank_zero_only
def log_hparams(logger: Logger, cfg: DictConfig, metrics: dict[str, float], step: int) -> None:
    """The HParams tab: :func:`hparams_columns` with the run's final validation and test
    metrics (``hparams/test_acc``, ...), at the last step, written as a session in the run's
    ``hparams/`` folder (:func:`write_session`), so no training curve gets a point it did not
    measure and TensorBoard can tell which settings a sweep varied."""
    params = hparams_columns(cfg)
    if not isinstance(logger, TensorBoardLogger):
        logger.log_hyperparams(params)
        return
    final = {f"hparams/{k.replace('/', '_')}": v for k, v in metrics.items()
             if k.startswith(("test", "val/"))}
    logger.hparams.update(params)  # hparams.yaml, as Lightning's log_hyperparams keeps it
    write_session(Path(logger.log_dir) / SESSION_DIR, params, final, step)


def write_session(path: Path, params: dict, metrics: dict[str, float], step: int) -> None:
    """One HParams session: its start (the settings), the final metrics and its end, and no
    experiment summary.

    TensorBoard's hparams plugin takes the first experiment summary it finds, verbatim, as the
    whole experiment (``backend_context._find_experiment_tag``): every hparam's ``differs``
    stays false, so a sweep's page ticks the first five names alphabetically and hides the
    swept ones. torch's ``hparams()``, hence Lightning's ``log_hyperparams``, writes one in every
    run. Without it the plugin infers the experiment from all the sessions it sees
    (``_compute_hparam_infos``): swept keys differ and come first. It infers the metrics from
    the scalars under each session's folder, so the session has a folder of its own holding
    only the final metrics, not the run's hundreds of training curves."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    _experiment, start, end = hparams(params, metrics)
    with SummaryWriter(log_dir=str(path)) as writer:
        writer.file_writer.add_summary(start, step)
        for tag, value in metrics.items():
            writer.add_scalar(tag, value, step)
        writer.file_writer.add_summary(end, step)
