"""Which speed settings make experiment=speedrun fastest on a device: its training time (the
training loop, validation included, from on_train_start to on_train_end, synchronised) and test
accuracy for each memory format and precision, alternated over rounds in one process after a
warm-up fit. These settings change speed, not what is learned; the fastest is the default's
evidence.

    python scripts/memory_formats.py --device cuda --out formats.json   # fp32/bf16 x formats
    python scripts/memory_formats.py --device cpu                       # fp32 x formats
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from initlab import project_root
from initlab.train import build
from initlab.utils import atomic_write

FORMATS = {"channels_first": "channels_last=false", "channels_last": "channels_last=true"}
PRECISIONS = {"cpu": {"fp32": "trainer.precision=32-true"},
              "cuda": {"fp32": "trainer.precision=32-true", "bf16": "trainer.precision=bf16-mixed"}}
QUICK = ["trainer.max_steps=20", "model.channels=[4,8]", "model.hidden=16"]


class TrainingClock(L.Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self.seconds = time.perf_counter() - self.start

    @staticmethod
    def _sync(pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()


def fit_once(overrides: list[str], splits) -> tuple[float, float, dict]:
    """Training seconds, test accuracy and the data splits of one speedrun fit."""
    verified = [] if splits is None else ["data.verify=false"]
    with initialize_config_dir(config_dir=str(project_root() / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*overrides, *verified])
    datamodule = instantiate(cfg.data)
    if splits is not None:  # read and verified once, by the warm-up
        datamodule.splits = splits
    clock = TrainingClock()
    datamodule, module, trainer = build(cfg, datamodule=datamodule, extra_callbacks=[clock])
    trainer.fit(module, datamodule=datamodule)
    accuracy = trainer.test(module, datamodule=datamodule, verbose=False)[0]["test/acc"]
    return clock.seconds, accuracy, datamodule.splits


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="20 steps of a tiny CNN, one round")
    parser.add_argument("--out", type=Path, default=Path("formats.json"))
    args = parser.parse_args(argv)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    base = ["experiment=speedrun", f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
            "logger=none", "checkpoint=null", "trainer.enable_progress_bar=false",
            f"output_dir={Path('outputs') / 'memory_formats'}", *(QUICK if args.quick else [])]
    variants = {f"{p}_{f}": [p_arg, f_arg] for p, p_arg in PRECISIONS[args.device].items()
                for f, f_arg in FORMATS.items()}
    _, _, splits = fit_once([*base, "trainer.max_steps=20"], None)  # warm-up: data, kernels
    seconds = {name: [] for name in variants}
    accuracy = {name: [] for name in variants}
    rounds = 1 if args.quick else args.rounds
    for r in range(rounds):
        names = list(variants)
        names = names[r % len(names):] + names[:r % len(names)]  # a new order each round
        for name in names:
            s, acc, _ = fit_once([*base, *variants[name], f"seed={r}"], splits)
            seconds[name].append(s)
            accuracy[name].append(acc)
            print(f"round {r} {name:<22} training {s:7.2f} s  test accuracy {acc:.4f}", flush=True)
    median = {name: statistics.median(v) for name, v in seconds.items()}
    fastest = min(median, key=median.get)
    result = {"device": args.device, "rounds": rounds, "quick": args.quick,
              "card": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
              "torch": torch.__version__, "training_s": seconds, "test_acc": accuracy,
              "median_s": median, "fastest": fastest,
              "vs_fastest": {name: m / median[fastest] for name, m in median.items()}}
    for name in variants:
        print(f"{name:<22} median {median[name]:7.2f} s  {result['vs_fastest'][name]:.2f}x the "
              f"fastest  mean test accuracy {statistics.mean(accuracy[name]):.4f}")
    print(f"fastest on {args.device}: {fastest}")
    atomic_write(args.out, json.dumps(result, indent=2).encode())
    return result


if __name__ == "__main__":
    main()
