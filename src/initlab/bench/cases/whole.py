"""whole: whole train.py processes against scripts/plain_train.py on the same recipe, seed and
data, alternated over rounds, with each run's breakdown of where the time went."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from hydra.utils import instantiate

from initlab.bench.cases.speedrun import SPEEDRUN_ACCURACY
from initlab.bench.common import ROOT, Settings, compose_cfg
from initlab.bench.timing import median_and_spread
from initlab.data import MNISTDataModule
from initlab.train import channels_last_in_effect, eval_batch_in_effect

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


def plain_args(cfg, data_dir: Path, device: str = "cpu") -> list[str]:
    """scripts/plain_train.py's arguments for the recipe of ``cfg`` on ``device`` (the
    evaluation batch initlab takes there, and the corrupted test sets its run evaluates);
    refuses a recipe it does not reproduce (another optimizer, augmentation, ...) rather than
    time something else."""
    from omegaconf import OmegaConf

    for key, expected in PLAIN_RECIPE.items():
        value = OmegaConf.select(cfg, key)
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        if key == "augment" and value is not None:
            value = {k: v for k, v in value.items() if k not in ("_target_", "seed") and v} or None
        if value != expected:
            raise ValueError(f"plain_train.py does not reproduce {key}={value!r} "
                             f"(it does {expected!r})")
    eval_batch = eval_batch_in_effect(cfg.data.eval_batch_size, instantiate(cfg.model),
                                      MNISTDataModule.input_shape, torch.device(device))
    corruptions = []
    if cfg.test and cfg.get("robustness"):
        for kind, levels in cfg.robustness.items():
            corruptions += [f"--{kind}", *map(str, levels)]
    return [*corruptions, "--data-dir", str(data_dir), "--epochs", str(cfg.trainer.max_epochs),
            "--max-steps", str(cfg.trainer.max_steps), "--batch-size", str(cfg.data.batch_size),
            "--eval-batch-size", str(eval_batch), "--lr", str(cfg.optim.lr),
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


def case_whole(settings: Settings, data_dir: Path, out: Path) -> dict:
    """Whole processes: ``python scripts/train.py experiment=speedrun seed=<round>`` and the
    default command for one epoch, each alternated (order swapped every round) with
    scripts/plain_train.py on the same recipe, epochs, seed and data; and ``python -c "import
    torch"``. Ratios are medians of the per-round ratios; the breakdown is the medians of each
    run's result.json timings_s next to the plain script's own phases; test accuracies are
    per round (seed) with their mean. The startup goal: the speedrun's first step within 2x
    (import torch + the plain script's data load)."""
    extra = WHOLE_QUICK if settings.quick else []
    work = out / "whole"

    plain_flags: dict[str, list[str]] = {}  # plain_train.py flags for initlab's own settings

    def commands_for(seed: int) -> tuple[dict, dict]:
        commands, plains = {}, {}
        for name, overrides in WHOLE_COMMANDS.items():
            overrides = [*overrides, f"seed={seed}"]
            cfg = compose_cfg(*overrides, f"data.data_dir={data_dir}", *extra)
            # both processes on the bench's device (train.py's accelerator=auto would take a GPU)
            commands[name] = [sys.executable, str(ROOT / "scripts" / "train.py"), *overrides,
                              f"data.data_dir={data_dir}", f"trainer.accelerator={settings.device}",
                              *extra]
            plains[name] = [sys.executable, str(ROOT / "scripts" / "plain_train.py"),
                            *plain_args(cfg, data_dir, settings.device), "--device", settings.device]
            in_effect = channels_last_in_effect(cfg.channels_last, instantiate(cfg.model),
                                                torch.device(settings.device))
            plain_flags[name] = ["--no-normalize-once",
                              "--channels-last" if in_effect else "--no-channels-last"]
        return commands, plains

    rounds_commands: dict[str, list[str]] = {n: [] for n in WHOLE_COMMANDS}
    rounds_plain: dict[str, list[str]] = {n: [] for n in WHOLE_COMMANDS}
    import_torch = [sys.executable, "-c", "import torch"]
    if not settings.quick:  # untimed: the libraries' files into the page cache (no cold round 1)
        timed_process([sys.executable, "-c", "import initlab.train"])
    times: dict[str, list[float]] = {"import_torch": []}
    ratios: dict[str, list[float]] = {}
    parts: dict[str, dict[str, list[dict]]] = {n: {"initlab": [], "plain": []}
                                               for n in WHOLE_COMMANDS}
    acc: dict[str, dict[str, list]] = {n: {"initlab": [], "plain": []} for n in WHOLE_COMMANDS}
    faults: dict[str, list[int]] = {"retained": [], "glibc_defaults": []}  # plain speedrun's fit
    corrupted_diff: dict[str, list[float]] = {}  # per round: initlab's and plain's accuracies
    for r in range(settings.rounds):
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
                         plains[name] + plain_flags[name] + ["--json", str(settings_json)])]
            if name == "speedrun":  # what retain_freed_memory and freeze_gc gain a plain script
                variants.append(("plain_glibc_defaults", plains[name] + [
                    "--no-retain-freed-memory", "--json", str(glibc_json)]))
                variants.append(("plain_gc_defaults", plains[name] + [
                    "--no-freeze-gc", "--json", str(work / f"{name}-{r}-plain-gc.json")]))
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
            if "plain_gc_defaults" in seconds:
                times.setdefault(f"{name}_plain_gc_defaults", []).append(
                    seconds["plain_gc_defaults"])
                ratios.setdefault("plain_gc_defaults_vs_frozen", []).append(
                    seconds["plain_gc_defaults"] / seconds["plain"])
            parts[name]["initlab"].append(result["timings_s"])
            parts[name]["plain"].append(plain["phases_s"])
            acc[name]["initlab"].append(result["metrics"].get("test/acc"))
            acc[name]["plain"].append(plain["test_acc"])
            if plain["corrupted_acc"]:  # the same corrupted sets: a set's cost in each
                n_sets = len(plain["corrupted_acc"])
                per_set = result["timings_s"]["robustness"] / n_sets
                ratios.setdefault(f"{name}_corrupted_set_vs_plain_corrupted_set", []).append(
                    per_set / (plain["phases_s"]["robustness"] / n_sets))
                ratios.setdefault(f"{name}_corrupted_set_vs_plain_test", []).append(
                    per_set / plain["phases_s"]["test"])
                corrupted_diff.setdefault(name, []).append(max(
                    abs(result["metrics"][f"{k}/acc"] - v) for k, v in plain["corrupted_acc"].items()))
        times["import_torch"].append(timed_process(import_torch))

    def medians(rows: list[dict]) -> dict[str, float]:
        return {k: statistics.median(row[k] for row in rows)
                for k in BREAKDOWN if all(k in row for row in rows)}

    result = {"commands": rounds_commands, "plain_commands": rounds_plain,
              "plain_commands_initlab_settings": {n: [f"{c} {' '.join(plain_flags[n])}" for c in cs]
                                                  for n, cs in rounds_plain.items()},
              "seconds": {}, "spread": {}, "ratios": {}, "ratio_spread": {},
              "breakdown": {n: {v: medians(rows) for v, rows in p.items()}
                            for n, p in parts.items()},
              "test_acc": acc, "rounds": settings.rounds,
              "corrupted_acc_max_diff": corrupted_diff,
              "plain_fit_page_faults": {k: statistics.median(v) for k, v in faults.items() if v},
              "test_acc_mean": {n: {v: statistics.mean(a) for v, a in by.items()}
                                for n, by in acc.items()}}
    result["goals"] = {f"speedrun mean test accuracy >= {SPEEDRUN_ACCURACY:g} over seeds "
                       f"0-{settings.rounds - 1}":
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
