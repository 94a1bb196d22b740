"""The paper's training-time figures from a sweep: activations per layer over training (Figs.
2-4: the sigmoid's top layer, tanh saturating layer by layer, softsign not) and test error
against updates for Table 1's rows (Fig. 11)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from initlab.report.collect import DATA_TITLES, TABLE1_ROWS, Run  # noqa: E402
from initlab.report.figures import save_figure  # noqa: E402
from initlab.report.table1 import Cell, table1_cells  # noqa: E402

SATURATING = ("sigmoid", "tanh", "softsign")


def _layers(run: Run) -> list[str]:
    """Hidden layers with an activation mean logged, input side first (the output layer has no
    activation statistics)."""
    names = [t.split("/")[1] for t in run.scalar_tags("activation/") if t.endswith("/mean")]
    return sorted(names, key=lambda n: [int(p) if p.isdigit() else p
                                        for p in re.split(r"(\d+)", n)])


def activation_runs(runs: list[Run]) -> list[Run]:
    """One run per configuration (its first seed) of a saturating activation with activation
    statistics over training, Table 1's order first."""
    order = {key: i for i, key in enumerate(TABLE1_ROWS)}
    firsts: dict[str, Run] = {}
    for run in runs:
        if run.activation in SATURATING and run.label not in firsts and _layers(run):
            firsts[run.label] = run
    return sorted(firsts.values(), key=lambda r: (r.data, order.get((r.activation, r.init), 99),
                                                   r.label))


def activation_figure(runs: list[Run]):
    """One panel per configuration: each hidden layer's mean activation (line) and 98th
    percentile (markers, dotted) against updates, the top layer named; None without data."""
    panels = activation_runs(runs)
    if not panels:
        return None
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    width, height = max(4.6 * ncols, 7.0), 3.6 * nrows  # one panel: room for the legend
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    depth = 0
    for ax, run in zip(axes.flat, panels):
        layers = _layers(run)
        depth = max(depth, len(layers))
        for i, layer in enumerate(layers):
            color = colors[i % len(colors)]
            mean = run.scalars(f"activation/{layer}/mean")
            p98 = run.scalars(f"activation/{layer}/p98")
            if mean:
                ax.plot(*zip(*mean), color=color, lw=1.3)
            if p98:
                ax.plot(*zip(*p98), color=color, ls=":", marker="o", ms=2.5, lw=0.8)
        ax.set_title(f"{run.activation} / {run.init} on {DATA_TITLES.get(run.data, run.data)}"
                     f"\n{run.label}"[:90], fontsize=8)
        ax.set_xlabel("updates")
        ax.set_ylabel("activation value")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=5, integer=True))
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    # one legend for every panel, below them: colour = hidden layer (1 = input side), style =
    # statistic; the panels stay uncovered
    handles = [Line2D([], [], color=colors[i % len(colors)], lw=2,
                      label=f"hidden layer {i + 1}" + (" (top)" if i == depth - 1 else ""))
               for i in range(depth)]
    handles += [Line2D([], [], color="black", lw=1.3, label="mean"),
                Line2D([], [], color="black", ls=":", marker="o", ms=2.5, lw=0.8,
                       label="98th percentile")]
    per_row = len(handles) if ncols == 3 else 4
    fig.legend(handles=handles, loc="lower center", ncol=per_row, fontsize=8, frameon=False)
    legend_rows = math.ceil(len(handles) / per_row)
    fig.suptitle("activations over training: mean (lines) and 98th percentile (dotted, "
                 "markers)" + (" " if ncols == 3 else "\n") + "per hidden layer (the paper's "
                 "Figs. 2-4)", fontsize=10)
    fig.tight_layout(rect=(0, (0.15 + 0.25 * legend_rows) / height, 1, 1))
    return fig


def error_curve_figure(runs: list[Run]):
    """One panel per data set: each Table 1 row's test error (mean over its seeds) against
    updates, logged at every validation (``test_curve/error``); None without data."""
    cells = table1_cells(runs)
    by_data: dict[str, list[Cell]] = {}
    for (data, _), cell in cells.items():
        if cell.curve():
            by_data.setdefault(data, []).append(cell)
    if not by_data:
        return None
    order = list(TABLE1_ROWS.values())
    fig, axes = plt.subplots(1, len(by_data), figsize=(7.5 * len(by_data), 4.0), squeeze=False)
    markers = "osD^v"
    for ax, (data, data_cells) in zip(axes[0], sorted(by_data.items())):
        for cell in sorted(data_cells, key=lambda c: order.index(c.row)):
            steps, errors = zip(*cell.curve())
            ax.plot(steps, errors, marker=markers[order.index(cell.row)], ms=4, lw=1.3,
                    label=f"{cell.row} (n={len(cell.runs)})")
        ax.set_title(f"{DATA_TITLES.get(data, data)}: test error during training", fontsize=9)
        ax.set_xlabel("updates")
        ax.set_ylabel("test error %")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=5, integer=True))
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # off the curves
    fig.suptitle("test error against updates, mean over seeds (the paper's Fig. 11)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def training_figures(root: Path, runs: list[Run]) -> list[tuple[str, str]]:
    """Draw the figures that have data; (file name, title) of each."""
    drawn = []
    for name, title, make in (
            ("activations_training.png",
             "activations over training per layer (Figs. 2-4)", activation_figure),
            ("test_error_training.png", "test error against updates (Fig. 11)",
             error_curve_figure)):
        fig = make(runs)
        if fig is not None:
            save_figure(fig, root / name)
            drawn.append((name, title))
    return drawn
