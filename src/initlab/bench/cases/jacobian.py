"""jacobian: the default probe with and without its Jacobian, in training steps."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from hydra.utils import instantiate

from initlab.bench.baselines import RawSteps
from initlab.bench.common import Settings, compose_cfg, training_overrides
from initlab.bench.timing import interleave, summarize, sync
from initlab.init import apply_init


def case_jacobian(settings: Settings, data_dir: Path, out: Path) -> dict:
    """The default probe (callbacks=default) at step 0 of the default CNN, with and without its
    Jacobian singular values, against one training step: the Jacobian's cost in steps."""
    from initlab.monitors.stats import probe

    cfg = compose_cfg(*training_overrides(data_dir, 1, out, settings.quick, settings.device),
                      "callbacks=default")
    device = torch.device(settings.device)
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
    steps = 5 if settings.quick else 50

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
    }, settings.rounds)
    result = summarize(times, 1, {"probe_vs_step": ("probe", "train_step"),
                                  "probe_jacobian_vs_step": ("probe_jacobian", "train_step")})
    seconds = result["seconds"]
    result["jacobian_ms"] = 1000 * (seconds["probe_jacobian"] - seconds["probe"])
    result["ratios"]["jacobian_vs_step"] = (seconds["probe_jacobian"] - seconds["probe"]) \
        / seconds["train_step"]
    return result
