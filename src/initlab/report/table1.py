"""Table 1 of Glorot & Bengio beside the measured one: both columns (Shapeset, MNIST), each
row's budget and learning rate, and sentences whose every comparative is chosen here from the
numbers they cite."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from initlab.report.collect import DATA_TITLES, PAPER_TABLE1, TABLE1_ROWS, Run

PAPER_UPDATES = 5_000_000  # the paper chose its rates on validation after 5 million updates
# A measured error agrees with the paper's when within the larger of AGREE_REL of the paper's
# error and AGREE_STDS seed standard deviations of the measurement
AGREE_REL = 0.10
AGREE_STDS = 2.0
# the paper's claim: these rows train better than those (lower test error), on both columns
BETTER_ROWS = ("Tanh N", "Softsign", "Softsign N")
WORSE_ROWS = ("Tanh", "Sigmoid")



def mean_std_text(mean: float, std: float, n: int) -> str:
    """``mean ± std`` over ``n`` seeds; one seed has no spread to show: its value alone."""
    return f"{mean:.2f}" if n == 1 else f"{mean:.2f} ± {std:.2f}"

@dataclass
class Cell:
    """One measured cell of Table 1: a row on a data set, over its seeds."""

    row: str
    data: str
    runs: list[Run]
    errors: list[float] = field(default_factory=list)
    lr_note: str = ""

    @property
    def n(self) -> int:
        return len(self.errors)

    @property
    def mean(self) -> float | None:
        return statistics.mean(self.errors) if self.errors else None

    @property
    def std(self) -> float:
        return statistics.stdev(self.errors) if len(self.errors) > 1 else 0.0

    @property
    def paper(self) -> float:
        return PAPER_TABLE1[self.data][self.row]

    @property
    def updates(self) -> int:
        return max((r.result or {}).get("steps", 0) for r in self.runs)

    @property
    def budget(self) -> str:
        return ", ".join(sorted({r.budget or "-" for r in self.runs}))  # "-": no budget set

    def curve(self) -> list[tuple[int, float]]:
        """Test error (%) against updates, mean over the seeds at the steps all of them have."""
        curves = [dict(r.scalars("test_curve/error")) for r in self.runs]
        curves = [c for c in curves if c]
        if not curves:
            return []
        steps = sorted(set.intersection(*(set(c) for c in curves)))
        return [(s, statistics.mean(c[s] for c in curves)) for s in steps]


def _finished(run: Run) -> bool:
    return bool(run.result) and run.status in ("ok", "stalled") \
        and "test/acc" in run.result.get("metrics", {})


def _val_acc(run: Run) -> float | None:
    return (run.result or {}).get("metrics", {}).get("val/acc") if _finished(run) else None


def table1_cells(runs: list[Run]) -> dict[tuple[str, str], Cell]:
    """(data, row) -> the measured cell. Runs of one row at several configured learning rates
    (budget=paper's sweep) keep those of the rate with the best mean final validation accuracy,
    as the paper chose; a run's own pilots (budget=cpu) chose its rate already."""
    groups: dict[tuple[str, str], dict[float, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        if run.table1_row and run.data in PAPER_TABLE1:
            configured = run.config.get("optim", {}).get("lr")
            groups[(run.data, run.table1_row)][configured].append(run)
    cells = {}
    for key, by_lr in groups.items():
        note = ""
        if len(by_lr) > 1:
            scores = {lr: [a for r in members if (a := _val_acc(r)) is not None]
                      for lr, members in by_lr.items()}
            mean_val = {lr: statistics.mean(v) for lr, v in scores.items() if v}
            chosen = max(mean_val, key=lambda lr: (mean_val[lr], -lr)) if mean_val \
                else min(by_lr)
            tried = ", ".join(f"{lr:g}" + (f" ({100 * mean_val[lr]:.2f}%)" if lr in mean_val
                                           else " (no finished run)") for lr in sorted(by_lr))
            note = f"chosen on validation accuracy from {tried}"
            members = by_lr[chosen]
        else:
            members = next(iter(by_lr.values()))
        cell = Cell(key[1], key[0], members,
                    [100 * (1 - r.result["metrics"]["test/acc"]) for r in members if _finished(r)])
        cell.lr_note = note or _pilot_note(members)
        cells[key] = cell
    return cells


def _pilot_note(members: list[Run]) -> str:
    pilots = [r.pilots for r in members if r.pilots]
    if not pilots:
        return "fixed"
    grid = ", ".join(f"{v:g}" for v in pilots[0]["lrs"])
    return f"pilots: {pilots[0]['steps']:,} updates at each of {grid}, best validation"


def lr_text(cell: Cell) -> str:
    """The rate(s) trained, with the seeds of each when they differ."""
    by_lr: dict[float, list] = defaultdict(list)
    for run in cell.runs:
        by_lr[run.lr].append(run.seed)
    if len(by_lr) == 1:
        return _rate(next(iter(by_lr)))
    return ", ".join(f"{_rate(lr)} (seed{'s' if len(seeds) > 1 else ''} "
                     f"{', '.join(str(s) for s in sorted(seeds))})"
                     for lr, seeds in sorted(by_lr.items(), key=lambda item: item[0] or 0))


def _rate(lr: float | None) -> str:
    return "?" if lr is None else f"{lr:g}"


def agreement_tolerance(paper: float, std: float) -> float:
    return max(AGREE_REL * paper, AGREE_STDS * std)


def paper_verdict(mean: float, std: float, paper: float, updates: int,
                  curve: list[tuple[int, float]] = ()) -> str:
    """How a measured error stands against the paper's, in words chosen from the numbers:
    agrees (within the tolerance), above it (and whether the budget stops short of the paper's
    5 million updates, with the test-error curve's last two points when it was still
    falling), or below it."""
    tolerance = agreement_tolerance(paper, std)
    diff = mean - paper
    if abs(diff) <= tolerance:
        return (f"agrees with the paper ({mean:.2f}% vs {paper:.2f}%, {diff:+.2f} points, "
                f"within {tolerance:.2f})")
    if diff < 0:
        return f"is {-diff:.2f} points below the paper's ({mean:.2f}% vs {paper:.2f}%)"
    text = f"is {diff:.2f} points above the paper's ({mean:.2f}% vs {paper:.2f}%)"
    if updates >= PAPER_UPDATES:
        return text + f" at the paper's budget ({updates:,} updates)"
    text += (f" after {updates:,} updates against the paper's {PAPER_UPDATES:,}: the budget "
             "stops short")
    if len(curve) >= 2 and curve[-1][1] < curve[-2][1]:
        (s0, e0), (s1, e1) = curve[-2], curve[-1]
        text += (f"; its test error was still falling at the end ({e0:.2f}% at update {s0:,}, "
                 f"{e1:.2f}% at {s1:,})")
    return text


def pair_verdict(better: Cell, worse: Cell) -> str:
    """``holds``, ``tie`` or ``reversed``: whether ``better`` (a row the paper finds better) is
    lower than ``worse`` by more than the larger of their seeds' standard deviations."""
    margin = max(better.std, worse.std)
    diff = worse.mean - better.mean
    if diff > margin:
        return "holds"
    return "tie" if diff >= -margin else "reversed"


def ordering_sentence(data: str, cells: dict[tuple[str, str], Cell]) -> str | None:
    """Whether the paper's ordering (BETTER_ROWS below WORSE_ROWS) holds on ``data``, pair by
    pair, naming each pair where it does not."""
    pairs = [(cells[(data, b)], cells[(data, w)]) for b in BETTER_ROWS for w in WORSE_ROWS
             if (data, b) in cells and (data, w) in cells
             and cells[(data, b)].n and cells[(data, w)].n]
    if not pairs:
        return None
    title = DATA_TITLES[data]
    verdicts = [(b, w, pair_verdict(b, w)) for b, w in pairs]
    held = sum(v == "holds" for _, _, v in verdicts)
    text = (f"The paper's ordering on {title} ({', '.join(BETTER_ROWS)} below "
            f"{' and '.join(WORSE_ROWS)}) holds for {held} of {len(pairs)} measured pairs")
    misses = []
    for b, w, verdict in verdicts:
        if verdict == "holds":
            continue
        gap = w.mean - b.mean
        how = (f"a tie: {abs(gap):.2f} points apart, within the seeds' spread of "
               f"{max(b.std, w.std):.2f}" if verdict == "tie"
               else f"reversed by {-gap:.2f} points")
        misses.append(f"{b.row} vs {w.row}, {b.mean:.2f}% vs {w.mean:.2f}% ({how})")
    return text + ("; the others: " + "; ".join(misses) if misses else "") + "."


def table1_section(runs: list[Run]) -> list[str]:
    """The report's Table 1: both columns beside the paper's, how each cell was measured, and
    what the numbers say against the paper. Empty when no run is a Table 1 row."""
    cells = table1_cells(runs)
    if not cells:
        return []
    names = list(TABLE1_ROWS.values())
    columns = list(PAPER_TABLE1)
    lines = ["## Table 1 (Glorot & Bengio 2010): test error %", "",
             "Measured: mean ± std over seeds (n; one seed: its error alone). The paper: one "
             "number a cell, after its learning rate was chosen on validation at 5 million "
             "updates.", "",
             "| row | " + " | ".join(f"{DATA_TITLES[d]} measured | {DATA_TITLES[d]} paper"
                                    for d in columns) + " |",
             "|---" * (1 + 2 * len(columns)) + "|"]
    for name in names:
        cols = []
        for data in columns:
            cell = cells.get((data, name))
            if cell is None:
                measured = "not measured"
            elif not cell.n:
                measured = "no finished run"
            else:
                measured = f"{mean_std_text(cell.mean, cell.std, cell.n)} ({cell.n})"
            cols += [measured, f"{PAPER_TABLE1[data][name]:.2f}"]
        lines.append(f"| {name} | " + " | ".join(cols) + " |")
    lines += ["", "| row | data | budget | model | updates | learning rate | how the rate was "
              "chosen |", "|---|---|---|---|---|---|---|"]
    for data in columns:
        for name in names:
            cell = cells.get((data, name))
            if cell is not None:
                lines.append(f"| {name} | {DATA_TITLES[data]} | {cell.budget} | "
                             f"{cell.runs[0].shape} | {cell.updates:,} | {lr_text(cell)} | "
                             f"{cell.lr_note} |")
    lines += ["", "**Against the paper** (agrees: within the larger of "
              f"{100 * AGREE_REL:g}% of the paper's error and {AGREE_STDS:g} seed standard "
              "deviations):", ""]
    for data in columns:
        for name in names:
            cell = cells.get((data, name))
            if cell is not None and cell.n:
                lines.append(f"- {name}, {DATA_TITLES[data]}: "
                             + paper_verdict(cell.mean, cell.std, cell.paper, cell.updates,
                                             cell.curve()) + ".")
        sentence = ordering_sentence(data, cells)
        if sentence:
            lines.append(f"- {sentence}")
    shapes = sorted({c.runs[0].shape for c in cells.values()})
    if shapes != ["5 x 1000"]:
        lines += ["", f"Model: {', '.join(shapes)} hidden units; the paper's is 5 x 1000."]
    return lines + [""]
