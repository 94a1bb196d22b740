"""report.md and figures from collected runs."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib
import matplotlib.ticker
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from initlab.monitors.stats import HISTOGRAM_BINS  # noqa: E402
from initlab.report.collect import DATA_TITLES, Run  # noqa: E402
from initlab.report.figures import save_figure  # noqa: E402
from initlab.report.lessons import lesson_section  # noqa: E402
from initlab.report.table1 import mean_std_text, table1_section  # noqa: E402
from initlab.report.training_figures import training_figures  # noqa: E402
from initlab.utils import atomic_write  # noqa: E402

LOG_SCALE = {"weight_grad", "backprop", "grad_norm"}
AT_INIT_KEYS = (("activation_std", "activation std"), ("backprop_std", "backprop std"),
                ("jacobian_mean_sv", "Jacobian mean singular value"))


def _fmt(value, digits=4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}g}"


def status_reason(run: Run) -> str:
    """The run's status with the measurement behind it, short: "diverged at step 37, loss
    1.35e+21", "stalled: test 11.3% < 20%", "lost: pid 4242 on node3 is gone, ..."."""
    res, status = run.result or {}, run.status
    if status == "diverged":
        step, loss = res.get("diverged_step"), res.get("diverged_loss")
        text = "diverged" + (f" at step {step}" if step is not None else "")
        return text + (f", loss {_loss(loss)}" if loss is not None else "")
    if status in ("ok", "stalled") and res.get("accuracy_basis"):
        accuracy, threshold = res["final_accuracy"], res["stall_accuracy"]
        sign = "<" if status == "stalled" else ">="
        return f"{status}: {res['accuracy_basis']} {100 * accuracy:.1f}% {sign} {100 * threshold:g}%"
    if status == "failed":
        return f"failed: {str(res.get('error', '')).splitlines()[0][:120]}" if res.get("error") \
            else "failed"
    if status in ("running", "lost"):
        return f"{status}: {run.liveness()[1]}"
    return f"{status}: {res['status_reason']}" if res.get("status_reason") else status


def _loss(value) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else str(value)  # "nan", "inf"


def error_table(runs: list[Run]) -> list[dict]:
    """Test error (%) per configuration: mean, std and n over finished ok and stalled seeds
    (a stalled run's error is a result: its row says it is in the mean); diverged runs have
    no test error and are left out, said in the row."""
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.label].append(run)
    rows = []
    for label, members in sorted(groups.items()):
        counted = [r for r in members if r.result and "test/acc" in r.result.get("metrics", {})
                   and r.status in ("ok", "stalled")]
        errors = [100 * (1 - r.result["metrics"]["test/acc"]) for r in counted]
        counts = defaultdict(int)
        for r in members:
            counts[r.status] += 1
        paper = members[0].paper_row
        rows.append({
            "label": label, "n": len(errors),
            "mean": statistics.mean(errors) if errors else None,
            "std": statistics.stdev(errors) if len(errors) > 1 else (0.0 if errors else None),
            "counts": dict(counts), "paper": paper, "runs": members,
            "stalled_in_mean": sum(r.status == "stalled" for r in counted),
        })
    return rows


def _flags(row: dict) -> str:
    """What the mean holds and leaves out, beside it."""
    counts, flags = row["counts"], []
    if row["stalled_in_mean"]:
        flags.append(f"includes {row['stalled_in_mean']} stalled")
    for status in ("diverged", "failed", "interrupted", "lost"):
        if counts.get(status):
            flags.append(f"{counts[status]} {status}, left out")
    text = f" **({'; '.join(flags)})**" if flags else ""
    return text + (f" *(partial: {counts['running']} still running)*"
                   if counts.get("running") else "")


def _table1_markdown(rows: list[dict]) -> list[str]:
    lines = ["| configuration | test error % (mean ± std) | n | status | paper (Table 1, same data) |",
             "|---|---|---|---|---|"]
    for row in rows:
        err = "-" if row["mean"] is None else mean_std_text(row["mean"], row["std"], row["n"])
        status = ", ".join(f"{k}: {v}" for k, v in sorted(row["counts"].items()))
        why = sorted({status_reason(r) for r in row["runs"]})  # seeds that agree: said once
        paper = f"{row['paper'][0]}: {row['paper'][1]:.2f}" if row["paper"] else "-"
        lines.append(f"| {row['label']} | {err}{_flags(row)} | {row['n']} | {status} "
                     f"({'; '.join(why)}) | {paper} |")
    return lines


def _at_init_markdown(runs: list[Run]) -> list[str]:
    """Per layer at step 0, one column block per configuration (first seed of each)."""
    firsts: dict[str, Run] = {}
    for run in runs:
        if run.init_stats and run.label not in firsts:
            firsts[run.label] = run
    if not firsts:
        return ["No run wrote init_stats.json (enable the monitors: callbacks=default or glorot)."]
    # standard next to normalized: order by activation, then init scheme
    ordered = sorted(firsts.values(),
                     key=lambda r: (r.data, r.activation, r.init != "standard", r.init))
    several_data = len({r.data for r in ordered}) > 1

    def column(run: Run) -> str:
        name = f"{run.activation} / {run.init}"
        return f"{name} ({DATA_TITLES.get(run.data, run.data)})" if several_data else name

    lines = []
    for key, title in AT_INIT_KEYS:
        layers = []
        for run in ordered:
            for name in run.init_stats["layers"]:
                if key in run.init_stats["layers"][name] and name not in layers:
                    layers.append(name)
        lines += [f"**{title} at initialization**", "",
                  "| layer | " + " | ".join(column(r) for r in ordered) + " |",
                  "|---" * (len(ordered) + 1) + "|"]
        for name in layers:
            cells = [_cell(r.init_stats["layers"].get(name, {}), key) for r in ordered]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        if key == "jacobian_mean_sv":
            lines += ["", "*exact*: from the explicit Jacobian; *slq*: stochastic Lanczos "
                      "quadrature estimate ± its standard error."]
        lines.append("")
    return lines


def _cell(stats: dict, key: str) -> str:
    text = _fmt(stats.get(key))
    if key == "jacobian_mean_sv" and key in stats:
        error = stats.get("jacobian_mean_sv_stderr")
        text += f" ± {_fmt(error, 2)}" if error is not None else ""
        text += f" ({stats['jacobian_method']})" if "jacobian_method" in stats else ""
    return text


def _layers(run: Run, family: str, stat: str = "") -> list[str]:
    suffix = f"/{stat}" if stat else ""
    return [t[len(family) + 1: len(t) - len(suffix)] for t in run.scalar_tags(family + "/")
            if t.endswith(suffix) and t.count("/") == 1 + bool(stat)]


def _per_layer_figure(runs: list[Run], family: str, stat: str, title: str, path: Path) -> bool:
    panels = [r for r in runs if _layers(r, family, stat)]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, run in zip(axes[0], panels):
        for layer in _layers(run, family, stat):
            points = run.scalars(f"{family}/{layer}/{stat}" if stat else f"{family}/{layer}")
            if points:
                ax.plot(*zip(*points), label=layer, lw=1.2)
        ax.set_title(f"{run.activation} / {run.init}\n{run.label}"[:90], fontsize=8)
        ax.set_xlabel("step")
        if family in LOG_SCALE and all(v > 0 for line in ax.get_lines() for v in line.get_ydata()):
            ax.set_yscale("log")  # layers differ by orders of magnitude
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    return True


def histogram_density(hist, bins: int = HISTOGRAM_BINS) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres, density) of a TensorBoard histogram proto on ``bins`` uniform bins from
    its min to its max: each bucket's count spread evenly over its width, divided by the total
    count and the bin width, so the curve integrates to 1. Buckets are read as TensorBoard
    reads them (empty end buckets dropped, outer edges at min and max); TensorBoard's own
    exponential buckets, tiny near 0, are re-binned too, so they show no false dip at 0.
    Empty when there is nothing to spread (no count, or every value equal)."""
    counts = np.asarray(hist.bucket, dtype=float)
    nonzero = np.flatnonzero(counts > 0)
    if not len(nonzero) or not hist.max > hist.min:
        return np.empty(0), np.empty(0)
    start, end = nonzero[0], nonzero[-1]
    inner = np.asarray(hist.bucket_limit[start:end], dtype=float)
    lefts = np.concatenate([[hist.min], inner])
    rights = np.concatenate([inner, [hist.max]])
    counts = counts[start: end + 1]
    grid = np.linspace(hist.min, hist.max, bins + 1)
    # mass of each bucket in each grid bin: uniform within the bucket
    overlap = (np.minimum(rights[:, None], grid[None, 1:])
               - np.maximum(lefts[:, None], grid[None, :-1])).clip(min=0)
    widths = rights - lefts
    share = np.where(widths[:, None] > 0, overlap / np.where(widths > 0, widths, 1)[:, None], 0)
    point = widths <= 0  # a zero-width bucket: all in the grid bin holding it
    share[point, np.clip(np.searchsorted(grid, lefts[point], side="right") - 1, 0, bins - 1)] = 1
    mass = counts @ share
    width = grid[1] - grid[0]
    return (grid[:-1] + grid[1:]) / 2, mass / (counts.sum() * width)


def histogram_curves(run: Run, kind: str, step: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """layer -> (x, density) of the run's ``hist/<kind>/<layer>`` at ``step``: the figure's data."""
    curves = {}
    for tag in sorted(t for t in run.events.Tags().get("histograms", [])
                      if t.startswith(f"hist/{kind}/")):
        hist = run.histogram(tag, step)
        if hist is not None:
            x, density = histogram_density(hist)
            if len(x):
                curves[tag.split("/")[-1]] = (x, density)
    return curves


def _histogram_figure(runs: list[Run], kind: str, path: Path) -> bool:
    fig = histogram_figure(runs, kind)
    if fig is None:
        return False
    save_figure(fig, path)
    return True


def histogram_figure(runs: list[Run], kind: str):
    """One panel per run: its layers' ``kind`` densities at step 0; None when none has any."""
    panels = [(r, curves) for r in runs if (curves := histogram_curves(r, kind))]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (run, curves) in zip(axes[0], panels):
        for layer, (x, density) in curves.items():
            ax.plot(x, density, label=layer, lw=1.2)
        ax.set_title(f"{run.activation} / {run.init}", fontsize=9)
        ax.set_ylabel("density")
        # few ticks, and an axis-wide power of ten: values like 1.5e-4 no longer overlap
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=5))
        ax.ticklabel_format(axis="both", style="sci", scilimits=(-2, 3))
        ax.legend(fontsize=7)
    fig.suptitle(f"{kind} densities at initialization (step 0)")
    fig.tight_layout()
    return fig


def _error_curves(rows: list[dict], path: Path) -> bool:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    drawn = False
    for row in rows:
        curves = [r.scalars("val/acc") for r in row["runs"]]
        curves = [c for c in curves if c]
        if not curves:
            continue
        steps = [s for s, _ in curves[0]]
        n = min(len(c) for c in curves)
        mean_err = [100 * (1 - statistics.mean(c[i][1] for c in curves)) for i in range(n)]
        ax.plot(steps[:n], mean_err, marker="o", ms=3, label=row["label"][:60])
        drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xlabel("step")
    ax.set_ylabel("validation error %")
    ax.set_yscale("log")
    ax.legend(fontsize=6)
    ax.set_title("error curves (mean over seeds)")
    fig.tight_layout()
    save_figure(fig, path)
    return True


def write_report(root: str | Path, runs: list[Run]) -> Path:
    root = Path(root)
    rows = error_table(runs)
    unfinished = [r for r in runs if r.result is None]
    lines = [f"# initlab report: {root}", ""]
    if unfinished:
        lost = sum(r.status == "lost" for r in unfinished)
        lines += [f"**Partial results:** {len(unfinished)} of {len(runs)} runs have no "
                  f"result.json: {len(unfinished) - lost} still running, {lost} lost (the "
                  "process ended without writing one: killed, out of memory, node lost; see "
                  "the runs table).", ""]
    lines += lesson_section(root, runs)
    lines += table1_section(runs)
    lines += ["## Test error per configuration", ""] + _table1_markdown(rows) + [""]
    lines += ["## At initialization (init_stats.json)", ""] + _at_init_markdown(runs) + [""]

    # one run per configuration (the first seed) for the per-layer figures
    firsts = [row["runs"][0] for row in rows]
    figures = []
    specs = [
        ("activation_mean.png", "activation", "mean", "activation mean per layer"),
        ("activation_std.png", "activation", "std", "activation std per layer"),
        ("activation_p98.png", "activation", "p98", "activation 98th percentile per layer"),
        ("weight_grad_std.png", "weight_grad", "std", "weight-gradient std per layer"),
        ("backprop_std.png", "backprop", "std", "back-propagated gradient std per layer"),
    ]
    for name, family, stat, title in specs:
        if _per_layer_figure(firsts, family, stat, title, root / name):
            figures.append((name, title))
    for kind in ("activation", "backprop"):
        name = f"hist_{kind}_init.png"
        if _histogram_figure(firsts, kind, root / name):
            figures.append((name, f"{kind} histograms at initialization"))
    figures += training_figures(root, runs)
    if _error_curves(rows, root / "error_curves.png"):
        figures.append(("error_curves.png", "validation error curves"))
    for i, run in enumerate(runs):
        name = f"grad_norm_{i:03d}.png"
        if _per_layer_figure([run], "grad_norm", "", f"gradient L2 norm per layer: "
                             f"{run.path.name}", root / name):
            figures.append((name, f"gradient norms, run {run.path.name} ({run.label}, "
                                  f"seed {run.seed}, {run.status})"))
    lines += ["## Figures", ""]
    lines += [f"### {title}\n\n![{title}]({name})\n" for name, title in figures]
    lines += ["## Runs", "", "| run | configuration | seed | status | score | steps | wall s |",
              "|---|---|---|---|---|---|---|"]
    for run in runs:
        res = run.result or {}
        where = status_reason(run)
        if res.get("status") == "diverged" and res.get("diverged_layer"):
            where += f" (layer {res['diverged_layer']})"
        lines.append(f"| {run.path.relative_to(root) if run.path != root else '.'} | {run.label} "
                     f"| {run.seed} | {where} | {_fmt(res.get('score'))} "
                     f"| {res.get('steps', '-')} | {_fmt((res.get('timings_s') or {}).get('total'), 3)} |")
    path = root / "report.md"
    atomic_write(path, ("\n".join(lines) + "\n").encode())
    return path
