"""What every lesson shares: reading runs into numbers, writing numbers in a language, and the
figure conventions (markers, integer ticks, decimal commas)."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable

import matplotlib
from omegaconf import OmegaConf

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator, ScalarFormatter  # noqa: E402

from initlab.report.collect import Run  # noqa: E402
from initlab.report.figures import save_figure  # noqa: E402

LANGS = ("en", "pt-BR")


# ---------------------------------------------------------------- reading runs

def choice(run: Run, key: str, default=None):
    """A run's setting. For a config group the lessons sweep (``optim``, ``augment``,
    ``arm/<topic>``): the option its overrides chose (``default`` if none). For any other key
    (``optim.lr``, ``init.scheme``, ``l1``): the value in its config, resolved as the run saw it
    (``1e-4`` is a float, ``${lesson_scale:...}`` its value)."""
    if key in ("optim", "augment") or key.startswith("arm/"):
        for override in reversed(run.overrides):
            name, _, option = override.partition("=")
            if name.lstrip("+~") == key:
                return option
        return default
    # an interpolation that cannot resolve outside Hydra (hydra:...) gives default
    value = OmegaConf.select(OmegaConf.create(run.config), key, default=default,
                             throw_on_resolution_failure=False)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def read_json(run: Run, name: str) -> dict | None:
    try:
        return json.loads((run.path / name).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def metric(run: Run, key: str) -> float | None:
    value = ((run.result or {}).get("metrics") or {}).get(key)
    return value if value is not None and math.isfinite(value) else None


def best_val_pct(run: Run) -> float | None:
    """The run's best validation accuracy in % (RunStatus), None for a diverged run."""
    value = (run.result or {}).get("best_val_acc")
    return None if value is None or run.status == "diverged" else 100 * value


def test_acc_pct(run: Run) -> float | None:
    """Test accuracy in %, None for a diverged or unfinished run."""
    value = metric(run, "test/acc")
    return None if value is None or run.status == "diverged" else 100 * value


def outcome(run: Run) -> dict:
    """What a run ended with, for any language to write: status, test accuracy, divergence step."""
    status = run.status if run.result is not None else "running"
    return {"status": status, "test_acc_pct": test_acc_pct(run),
            "diverged_step": (run.result or {}).get("diverged_step")}


def split_layers(layers: Iterable[str]) -> tuple[list[str], str | None]:
    """(every layer but the output layer, the output layer) of a run's per-layer table
    (init_stats.json, weights.json): it lists the model's weight layers in the order the model
    defines them, the output layer last (the model contract, initlab.models.contract)."""
    names = list(layers)
    return names[:-1], (names[-1] if names else None)


def init_layer_stat(run: Run, key: str) -> list[tuple[str, float]]:
    """(layer, its ``key`` in init_stats.json) for each layer below the output layer that has it."""
    layers = (run.init_stats or {}).get("layers", {})
    hidden, _ = split_layers(layers)
    return [(name, layers[name][key]) for name in hidden if key in layers[name]]


def percent_curve(run: Run, tag: str) -> list[list[float]]:
    return [[s, 100 * v] for s, v in run.scalars(tag)]


def steps_of(runs: list[Run]) -> int | None:
    return next(((r.result or {}).get("steps") for r in runs if r.status == "ok"),
                next(((r.result or {}).get("steps") for r in runs if r.result), None))


def by(runs: list[Run], *keys: str) -> tuple[dict[tuple, Run], list[str]]:
    """Runs keyed by their values of ``keys`` (the first run of each, in job order), and the
    keys that more than one run holds (another swept setting, a second seed)."""
    table: dict[tuple, Run] = {}
    shared: list[str] = []
    for run in runs:
        key = tuple(choice(run, k) for k in keys)
        if key in table and str(key) not in shared:
            shared.append(str(key))
        table.setdefault(key, run)
    return table, shared


def ordered(values: Iterable, order=None) -> list:
    values = list(dict.fromkeys(values))
    if order:
        return [v for v in order if v in values] + [v for v in values if v not in order]
    try:
        return sorted(values)
    except TypeError:
        return values


def mean(values) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.mean(values) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


# ---------------------------------------------------------------- numbers in a language

def num(value: float | None, lang: str, digits: int = 3) -> str:
    """``digits`` significant digits; pt-BR with a decimal comma."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    text = f"{value:.{digits}g}"
    if "e" in text:  # 1e-05 -> 1e-5: the form students type
        mant, exp = text.split("e")
        text = f"{mant}e{int(exp)}"
    return text.replace(".", ",") if lang == "pt-BR" else text


def fixed(value: float | None, lang: str, digits: int = 1) -> str:
    """``digits`` decimals; pt-BR with a decimal comma and a thousands point."""
    if value is None or not math.isfinite(value):
        return "-"
    text = f"{value:,.{digits}f}"
    return text.replace(",", "_").replace(".", ",").replace("_", ".") if lang == "pt-BR" else text


def pct(value: float | None, lang: str, digits: int = 1) -> str:
    return "-" if value is None else f"{fixed(value, lang, digits)}%"


def integer(value: int | None, lang: str) -> str:
    if value is None:
        return "-"
    return f"{value:,}".replace(",", "." if lang == "pt-BR" else ",")


STATUS = {"stalled": {"en": "stalled", "pt-BR": "estagnada"},
          "diverged": {"en": "diverged", "pt-BR": "divergiu"},
          "running": {"en": "not finished", "pt-BR": "não terminou"},
          "failed": {"en": "failed", "pt-BR": "falhou"}}


def fmt_outcome(o: dict | None, lang: str) -> str:
    """Test accuracy, or what stopped the run."""
    if not o:
        return "-"
    status = o["status"]
    if status == "diverged":
        step = o.get("diverged_step")
        return (f"diverged at step {step}" if lang == "en" else f"divergiu no passo {step}")
    if status in ("running", "failed"):
        return STATUS[status][lang]
    text = pct(o["test_acc_pct"], lang)
    return text + (f" ({STATUS['stalled'][lang]})" if status == "stalled" else "")


def pick(lang: str, en: str, pt: str) -> str:
    return en if lang == "en" else pt


def compare(a: float, b: float, lang: str, more: tuple[str, str], less: tuple[str, str],
            same: tuple[str, str], tolerance: float = 0.0) -> str:
    """The word for a against b: ``more`` if a > b + tolerance, ``less`` if a < b - tolerance,
    ``same`` otherwise; each given as (en, pt)."""
    words = more if a > b + tolerance else less if a < b - tolerance else same
    return words[0] if lang == "en" else words[1]


def times(a: float, b: float, lang: str) -> str:
    """How many times a is b, as "3.2x"."""
    return f"{num(a / b, lang, 2)}x" if b else "-"


def join(parts: list[str], lang: str) -> str:
    parts = [p for p in parts if p]
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + pick(lang, " and ", " e ") + parts[-1]


# ---------------------------------------------------------------- figures

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
STYLES = ["-", "--", ":", "-."]
FONT = 10


def panels(n: int, rows: int = 1, width: float = 4.6, height: float = 3.5):
    fig, axes = plt.subplots(rows, n, figsize=(width * n, height * rows), squeeze=False)
    return fig, axes


def style(i: int, filled: bool = True) -> dict:
    """The i-th series' look: a colour, a marker and a line style, so that two series that lie
    on each other still both show."""
    return {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)],
            "ls": STYLES[i % len(STYLES)], "markersize": 8 - (i % 3),
            "mfc": f"C{i % 10}" if filled else "none", **({} if filled else {"markersize": 11, "mew": 1.5})}


def legend(ax, lang: str, loc="best", ncol: int = 1) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=FONT - 2, loc=loc, ncol=ncol, framealpha=0.85)


def integer_axis(ax, axis: str = "x") -> None:
    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True))


def decimal_comma(ax, lang: str, axes: str = "xy") -> None:
    """Tick labels of linear axes with a decimal comma in pt-BR (log axes keep powers of ten)."""
    if lang != "pt-BR":
        return
    formatter = FuncFormatter(lambda v, _: f"{v:g}".replace(".", ","))
    for name in axes:
        axis = ax.xaxis if name == "x" else ax.yaxis
        scale = ax.get_xscale() if name == "x" else ax.get_yscale()
        # only the default number formatter: named ticks (bars, set labels) stay as they are
        if scale == "linear" and type(axis.get_major_formatter()) is ScalarFormatter:
            axis.set_major_formatter(formatter)


def note(ax, text: str, y: float = 0.45) -> None:
    """A line of text inside the panel, for what the lines cannot show (two runs coinciding)."""
    ax.text(0.03, y, text, transform=ax.transAxes, fontsize=FONT - 2, va="center",
            bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8, "lw": 0.5})


def save(fig, path, lang: str) -> None:
    for ax in fig.axes:
        ax.title.set_fontsize(FONT)
        ax.xaxis.label.set_fontsize(FONT)
        ax.yaxis.label.set_fontsize(FONT)
        ax.tick_params(labelsize=FONT - 1)
        decimal_comma(ax, lang)
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
