"""The bench's table on stdout: each figure against its target, seconds with their spread, and
the speedrun's and the whole-process case's details."""

from __future__ import annotations

from initlab.bench.cases.whole import BREAKDOWN
from initlab.bench.common import SPREAD_WARNING

# initlab over a minimal LightningModule, not over a raw loop: Lightning's own loop costs a raw
# loop's step more than 5% here and is accepted as its cost (docs/performance.md)
TARGETS = {"initlab_vs_lightning": ("<=", 1.02), "monitors_default_command": ("<=", 1.05),
           "augmented_vs_per_image": (">=", 20.0), "speedrun_time": ("<=", 1.2),
           "whole_speedrun": ("<=", 1.15), "first_step_vs_floor": ("<=", 2.0),
           "default_corrupted_set_vs_plain_test": ("<=", 1.0),
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
    for n, diffs in result.get("corrupted_acc_max_diff", {}).items():
        print(f"  {n}: corrupted test sets, largest accuracy difference initlab vs plain per "
              f"round {[float(f'{d:.1e}') for d in diffs]} (the same images and weights: ~0)")
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
