"""The lesson experiments (experiment=lesson/<topic>): each topic's figure and the measured
sentence that states its claim with the sweep's own numbers.

A sweep is a lesson when its runs' config says ``lesson.topic``; ``write_report`` then puts the
lesson first in report.md and writes ``lesson.json`` (topic, sentences, numbers) next to it.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
from omegaconf import OmegaConf

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from initlab.report.collect import Run  # noqa: E402
from initlab.report.figures import save_figure  # noqa: E402
from initlab.utils import atomic_write  # noqa: E402

# topic -> (number in the lesson, title, the lesson's claim)
LESSONS = {
    "symmetry": (1, "Zero initialization and symmetry",
                 "Zero initialization fails: with no randomness the units of a layer stay identical."),
    "naive_init": (2, "Naive random draws",
                   "Draws from U[-1, 1] or N(0, 1) also work badly: passed through the activation, "
                   "values saturate or explode."),
    "xavier_variants": (3, "Xavier and its variants",
                        "Var(W) = 1/n_in keeps Var(Y) = n Var(W) Var(X) constant; the paper's "
                        "2/(n_in + n_out) balances forward and backward; He's 2/n_in is for ReLU."),
    "learning_rate": (4, "The learning rate",
                      "Too small takes forever; too large overshoots the minimum and never converges."),
    "batch_size": (5, "The batch size",
                   "Smaller batches represent the data less well (noisier gradients); larger "
                   "batches take more time per step."),
    "optimizers": (6, "AdaGrad, RMSProp, Adam",
                   "Adaptive methods start with bigger steps and move to smaller ones; Adam does "
                   "it automatically."),
    "vanishing": (7, "Vanishing gradients",
                  "The deeper the network, the less the layers near the input feel the error at "
                  "the output; good initialization and normalization mitigate it."),
    "exploding": (8, "Exploding gradients",
                  "The opposite problem: gradients grow toward the input and training blows up."),
    "fitting": (9, "Overfitting and underfitting",
                "A model too small underfits; a large one on little data overfits; regularization "
                "closes the gap."),
    "l1_l2": (10, "L1 and L2 penalties", "L1 and L2 penalize large weights; L1 makes them sparse."),
    "dropout": (11, "Dropout",
                "Dropping random units during training keeps the network from relying on any one."),
    "augmentation": (12, "Data augmentation", "Adding noise and skewing the images: more robust models."),
}


@dataclass
class LessonResult:
    sentences: list[str]
    figure: str | None = None
    table: list[str] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)


# ---------------------------------------------------------------- reading runs

def lesson_topic(runs: list[Run]) -> str | None:
    """The sweep's lesson topic, or None when its runs are not (all) one lesson."""
    topics = {(r.config.get("lesson") or {}).get("topic") for r in runs}
    if len(topics) != 1:
        return None
    topic = topics.pop()
    return topic if topic in LESSONS else None


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


def _json(run: Run, name: str) -> dict | None:
    try:
        return json.loads((run.path / name).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def weights(run: Run) -> dict | None:
    return _json(run, "weights.json")


def metric(run: Run, key: str) -> float | None:
    value = ((run.result or {}).get("metrics") or {}).get(key)
    return value if value is not None and math.isfinite(value) else None


def best_val(run: Run) -> float | None:
    """The run's best validation accuracy in % (RunStatus), None for a diverged run."""
    value = (run.result or {}).get("best_val_acc")
    return None if value is None or run.status == "diverged" else 100 * value


def test_acc(run: Run) -> float | None:
    """Test accuracy in %, None for a diverged or unfinished run."""
    value = metric(run, "test/acc")
    return None if value is None or run.status == "diverged" else 100 * value


def pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}%"


def num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}g}"


def outcome(run: Run) -> str:
    """Test accuracy, or what stopped the run."""
    if run.status == "diverged":
        return f"diverged at step {(run.result or {}).get('diverged_step')}"
    if run.result is None:
        return "not finished"
    if run.status == "failed":
        return "failed"
    return pct(test_acc(run)) + (" (stalled)" if run.status == "stalled" else "")


def hidden_layers(stats: dict) -> list[str]:
    """Layer names of a weights.json / init_stats.json table, the output layer excluded."""
    return [name for name in stats if name != "out"]


def init_layer_stat(run: Run, key: str) -> list[tuple[str, float]]:
    layers = (run.init_stats or {}).get("layers", {})
    return [(name, s[key]) for name, s in layers.items() if key in s]


def _save(fig, path: Path) -> None:
    for ax in fig.axes:
        ax.title.set_fontsize(9)
    fig.tight_layout()
    save_figure(fig, path, dpi=80)


def _legend(ax, fontsize: int = 7) -> None:
    if ax.get_legend_handles_labels()[0]:  # a panel with nothing drawn gets no empty legend
        ax.legend(fontsize=fontsize)


def _panels(n: int, width: float = 4.8, height: float = 3.4, rows: int = 1):
    fig, axes = plt.subplots(rows, n, figsize=(width * n, height * rows), squeeze=False)
    return fig, axes


SHARED: list[str] = []  # configurations that more than one run holds, for the report's note


def _by(runs: list[Run], *keys: str) -> dict[tuple, Run]:
    """Runs keyed by their values of ``keys``: the first run of each (in job order); a key that
    several runs share (another swept setting, a second seed) is noted in SHARED."""
    table: dict[tuple, Run] = {}
    for run in runs:
        key = tuple(choice(run, k) for k in keys)
        if key in table and str(key) not in SHARED:
            SHARED.append(str(key))
        table.setdefault(key, run)
    return table


def _ordered(values, order=None) -> list:
    values = list(dict.fromkeys(values))
    if order:
        return [v for v in order if v in values] + [v for v in values if v not in order]
    try:
        return sorted(values)
    except TypeError:
        return values


# ---------------------------------------------------------------- the lessons

def _symmetry(runs: list[Run], root: Path) -> LessonResult:
    order = ["zeros", "constant", "xavier"]
    rows, numbers = [], {}
    fig, axes = _panels(2)
    by_init = _by(runs, "init.scheme")
    for run in (by_init[(i,)] for i in _ordered((i for i, in by_init), order)):
        summary = weights(run)
        if summary is None:
            continue
        layers = hidden_layers(summary["layers"])
        distinct = [summary["layers"][n]["distinct_units"] for n in layers]
        units = [summary["layers"][n]["units"] for n in layers]
        numbers[run.init] = {"distinct_units": dict(zip(layers, distinct)), "units": units[0],
                             "test_acc": test_acc(run), "steps": summary["step"]}
        axes[0][0].plot(range(1, len(layers) + 1), distinct, marker="o", label=run.init)
        rows.append(f"| {run.init} | {' / '.join(map(str, distinct))}, of {units[0]} each "
                    f"| {outcome(run)} |")
    if not numbers:
        return LessonResult(["No run wrote weights.json yet."])
    axes[0][0].set(xlabel="hidden layer", ylabel="distinct units after training", yscale="log",
                   title="units whose incoming weights differ")
    axes[0][0].legend()
    names = list(numbers)
    axes[0][1].bar(names, [numbers[n]["test_acc"] or 0 for n in names])
    axes[0][1].set(ylabel="test accuracy %", title="accuracy after training")
    _save(fig, root / "lesson_symmetry.png")
    parts = []
    for name, n in numbers.items():
        counts = ", ".join(f"{layer} {count}" for layer, count in n["distinct_units"].items())
        parts.append(f"{name} init leaves distinct units ({counts}, of {n['units']} each) and "
                     f"reaches {outcome(by_init[(name,)])} test accuracy")
    steps = next(iter(numbers.values()))["steps"]
    sentence = f"After {steps} SGD steps, " + "; ".join(parts) + "."
    table = ["| init | distinct units per hidden layer | test accuracy |", "|---|---|---|", *rows]
    return LessonResult([sentence], "lesson_symmetry.png", table, numbers)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.mean(values) if values else None


def _naive_init(runs: list[Run], root: Path) -> LessonResult:
    acts = _ordered((r.activation for r in runs), ["tanh", "sigmoid", "relu"])
    inits = _ordered((r.init for r in runs), ["uniform", "normal", "xavier"])
    table = _by(runs, "model.activation", "init.scheme")
    fig, axes = _panels(len(acts), rows=2)
    numbers, sentences, rows = {}, [], []
    for col, act in enumerate(acts):
        for init in inits:
            run = table.get((act, init))
            if run is None:
                continue
            sat = init_layer_stat(run, "activation_saturated")
            std = init_layer_stat(run, "activation_std")
            hidden = [(n, v) for n, v in sat if n != "out"]
            numbers[f"{act}/{init}"] = {
                "saturated_mean": _mean(v for _, v in hidden),
                "activation_std_last_hidden": ([v for n, v in std if n != "out"] or [None])[-1],
                "test_acc": test_acc(run), "status": run.status}
            if hidden:
                axes[0][col].plot(range(1, len(hidden) + 1), [v for _, v in hidden], marker="o",
                                  label=init)
            hstd = [v for n, v in std if n != "out"]
            if hstd:
                axes[1][col].plot(range(1, len(hstd) + 1), hstd, marker="o", label=init)
            n = numbers[f"{act}/{init}"]
            sat = None if n["saturated_mean"] is None else 100 * n["saturated_mean"]
            rows.append(f"| {act} | {init} | {pct(sat)} "
                        f"| {num(n['activation_std_last_hidden'])} | {outcome(run)} |")
        axes[0][col].set(title=f"{act}: {'dead' if act == 'relu' else 'saturated'} fraction at init",
                         xlabel="hidden layer")
        axes[1][col].set(title=f"{act}: activation std at init", xlabel="hidden layer", yscale="log")
        _legend(axes[0][col], 7)
        _legend(axes[1][col], 7)
    _save(fig, root / "lesson_naive_init.png")
    for act in acts:
        parts = []
        for init in inits:
            n = numbers.get(f"{act}/{init}")
            if n is None:
                continue
            word = "dead" if act == "relu" else "saturated"
            sat = "-" if n["saturated_mean"] is None else f"{100 * n['saturated_mean']:.0f}%"
            parts.append(f"{init}: {sat} {word}, last hidden std {num(n['activation_std_last_hidden'])}, "
                         f"then {outcome(table[(act, init)])}")
        sentences.append(f"{act} MLP at init — " + "; ".join(parts) + ".")
    header = ["| activation | init | saturated (ReLU: dead) at init, mean over hidden layers "
              "| activation std, last hidden layer | after training |", "|---|---|---|---|---|"]
    return LessonResult(sentences, "lesson_naive_init.png", header + rows, numbers)


def _xavier_variants(runs: list[Run], root: Path) -> LessonResult:
    acts = _ordered((r.activation for r in runs), ["tanh", "relu"])
    inits = _ordered((r.init for r in runs), ["lecun", "xavier", "he"])
    formula = {"lecun": "1/n_in", "xavier": "2/(n_in+n_out)", "he": "2/n_in"}
    table = _by(runs, "model.activation", "init.scheme")
    fig, axes = _panels(len(acts), rows=2)
    numbers, sentences, rows = {}, [], []
    for col, act in enumerate(acts):
        parts = []
        for init in inits:
            run = table.get((act, init))
            if run is None:
                continue
            fwd = [v for n, v in init_layer_stat(run, "activation_std") if n != "out"]
            back = [v for n, v in init_layer_stat(run, "backprop_std") if n != "out"]
            label = f"{init} ({formula.get(init, '?')})"
            if fwd:
                axes[0][col].plot(range(1, len(fwd) + 1), fwd, marker="o", label=label)
            if back:
                axes[1][col].plot(range(1, len(back) + 1), back, marker="o", label=label)
            n = numbers[f"{act}/{init}"] = {
                "activation_std_first": fwd[0] if fwd else None,
                "activation_std_last": fwd[-1] if fwd else None,
                "backprop_std_first_over_last": (back[0] / back[-1]) if back and back[-1] else None,
                "test_acc": test_acc(run)}
            rows.append(f"| {act} | {label} | {num(n['activation_std_first'])} → "
                        f"{num(n['activation_std_last'])} | {num(n['backprop_std_first_over_last'])} "
                        f"| {outcome(run)} |")
            parts.append(f"{init} ({formula.get(init, '?')}) activation std {num(n['activation_std_first'])}"
                         f" → {num(n['activation_std_last'])} from the first to the last hidden layer, "
                         f"backprop std ratio first/last {num(n['backprop_std_first_over_last'])}, "
                         f"{outcome(run)}")
        depth = len(fwd) if fwd else "?"
        sentences.append(f"{act}, {depth} hidden layers: " + "; ".join(parts) + ".")
        axes[0][col].set(title=f"{act}: activation std at init", xlabel="hidden layer", yscale="log")
        axes[1][col].set(title=f"{act}: back-propagated gradient std at init",
                         xlabel="hidden layer", yscale="log")
        _legend(axes[0][col], 7)
        _legend(axes[1][col], 7)
    _save(fig, root / "lesson_xavier_variants.png")
    header = ["| activation | init, Var(W) | activation std first → last hidden | backprop std "
              "first/last hidden | after training |", "|---|---|---|---|---|"]
    return LessonResult(sentences, "lesson_xavier_variants.png", header + rows, numbers)


LR_FIND_SKIP = 10  # lightning.pytorch.tuner.lr_finder: suggestion(skip_begin=10)


def _learning_rate(runs: list[Run], root: Path) -> LessonResult:
    by_lr = {lr: run for (lr,), run in _by(runs, "optim.lr").items()}
    lrs = sorted(by_lr)
    fig, axes = _panels(3)
    numbers = {}
    for lr in lrs:
        run = by_lr[lr]
        loss = run.scalars("train/loss")
        if loss:
            axes[0][1].plot(*zip(*loss), label=f"lr {lr:g}")
        numbers[f"{lr:g}"] = {"test_acc": test_acc(run), "status": run.status,
                              "best_val_acc": best_val(run),
                              "diverged_step": (run.result or {}).get("diverged_step"),
                              "first_loss": loss[0][1] if loss else None,
                              "last_loss": loss[-1][1] if loss else None}
    accs = [numbers[f"{lr:g}"]["test_acc"] for lr in lrs]
    axes[0][0].plot(lrs, [a if a is not None else float("nan") for a in accs], marker="o")
    for lr, a in zip(lrs, accs):
        if a is None:
            axes[0][0].annotate(numbers[f"{lr:g}"]["status"], (lr, 10), rotation=90, fontsize=8)
    axes[0][0].set(xscale="log", xlabel="learning rate (SGD)", ylabel="test accuracy %",
                   title="accuracy at the budget", ylim=(0, 100))
    axes[0][1].set(xlabel="step", ylabel="training loss", yscale="log", title="training loss")
    _legend(axes[0][1], 7)
    found = next((f for r in runs if (f := _json(r, "lr_find.json"))), None)
    lowest = None
    if found:
        # Lightning's running mean is biased low over its first steps (its bias correction is one
        # step ahead): drop the first LR_FIND_SKIP points, as its own suggestion does
        curve = [(lr, loss) for lr, loss in list(zip(found["lr"], found["loss"]))[LR_FIND_SKIP:]
                 if loss is not None and math.isfinite(loss)]
        if curve:
            axes[0][2].plot(*zip(*curve))
            lowest = min(curve, key=lambda p: p[1])[0]
            axes[0][2].axvline(lowest, color="g", ls=":", label=f"lowest loss {lowest:.3g}")
        if found.get("suggestion"):
            axes[0][2].axvline(found["suggestion"], color="r", ls="--",
                               label=f"Lightning's suggestion {found['suggestion']:.3g}")
        _legend(axes[0][2], 7)
        axes[0][2].set(xscale="log", xlabel="learning rate", ylabel="smoothed training loss",
                       title=f"range test (lr_find), from its point {LR_FIND_SKIP}")
    _save(fig, root / "lesson_learning_rate.png")
    finished = [lr for lr in lrs if numbers[f"{lr:g}"]["test_acc"] is not None
                and numbers[f"{lr:g}"]["best_val_acc"] is not None]
    sentences = []
    if finished:
        steps = next(((r.result or {}).get("steps") for r in runs if r.status == "ok"), None)
        best = max(finished, key=lambda lr: numbers[f"{lr:g}"]["best_val_acc"])  # by validation
        best_acc = numbers[f"{best:g}"]["test_acc"]
        small = lrs[0]
        s = numbers[f"{small:g}"]
        text = (f"In {steps} SGD steps the best rate by validation, {best:g}, reaches "
                f"{pct(best_acc)} test accuracy; the "
                f"smallest, {small:g}, reaches {outcome(by_lr[small])}")
        if s["test_acc"] is not None:
            text += f", {best_acc - s['test_acc']:.1f} points below"
        large = lrs[-1]
        g = numbers[f"{large:g}"]
        if g["status"] == "diverged":
            text += f"; the largest, {large:g}, diverged (loss not finite) at step {g['diverged_step']}"
        elif g["status"] not in ("ok", "stalled"):
            text += f"; the largest, {large:g}: {outcome(by_lr[large])}"
        else:
            text += (f"; the largest, {large:g}, never converges: training loss "
                     f"{num(g['first_loss'])} at the first logged step, {num(g['last_loss'])} at "
                     f"the last, {outcome(by_lr[large])}")
        sentences.append(text + ".")
        numbers["best_lr"] = best
    if found:
        stopped = (f", stopped early at {found['lr'][-1]:.3g} (loss above 4x its best)"
                   if len(found["lr"]) < found["num_training"] else "")
        sentences.append(f"The range test (Lightning's lr_find: {len(found['lr'])} steps of a rate "
                         f"growing from {found['lr'][0]:.3g}{stopped}) has its lowest "
                         f"smoothed loss at {num(lowest)}; Lightning suggests "
                         f"{num(found.get('suggestion'))} (the steepest slope of the loss against "
                         f"the rate itself, not its logarithm, which favours small rates).")
        numbers["lr_find_suggestion"] = found.get("suggestion")
        numbers["lr_find_lowest_loss_lr"] = lowest
    table = ["| learning rate | test accuracy | training loss first → last |", "|---|---|---|"]
    table += [f"| {lr:g} | {outcome(by_lr[lr])} | {num(numbers[f'{lr:g}']['first_loss'])} → "
              f"{num(numbers[f'{lr:g}']['last_loss'])} |" for lr in lrs]
    return LessonResult(sentences, "lesson_learning_rate.png", table, numbers)


def _seconds(duration: str) -> float:
    """Lightning's "DD:HH:MM:SS" in seconds."""
    days, hours, minutes, seconds = (float(part) for part in str(duration).split(":"))
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def _batch_size(runs: list[Run], root: Path) -> LessonResult:
    table = _by(runs, "arm/batch_size", "data.batch_size")
    sizes = sorted({bs for _, bs in table})
    numbers = {}
    for bs in sizes:
        epochs_run, time_run = table.get(("epochs", bs)), table.get(("time", bs))
        n = numbers[bs] = {}
        if epochs_run is not None and epochs_run.result:
            cosines = [v for _, v in epochs_run.scalars("grad_noise/cosine")]
            n.update(cosine_mean=_mean(cosines), epochs=epochs_run.result.get("epochs"),
                     acc_epochs=test_acc(epochs_run),
                     subset=choice(epochs_run, "callbacks.grad_noise.num_examples"))
        if time_run is not None and time_run.result:
            # timed on the wall-clock arm: no gradient-noise measurements there; time/train_s
            # leaves validation out
            clock = time_run.scalars("time/train_s")  # (step, training seconds up to it)
            per_epoch = math.ceil(choice(time_run, "data.train_samples", 0) / bs)
            step_ms = 1000 * clock[-1][1] / clock[-1][0] if clock and clock[-1][0] else None
            n.update(acc_time=test_acc(time_run), time_steps=time_run.result.get("steps"),
                     time_budget=choice(time_run, "trainer.max_time"), step_ms=step_ms,
                     epoch_s=step_ms * per_epoch / 1000 if step_ms and per_epoch else None)
    fig, axes = _panels(3)
    xs = [bs for bs in sizes if numbers[bs].get("cosine_mean") is not None]
    axes[0][0].plot(xs, [numbers[b]["cosine_mean"] for b in xs], marker="o")
    axes[0][0].set(xscale="log", xlabel="batch size", ylabel="cosine(step gradient, subset gradient)",
                   title="gradient noise (1 = the subset's full-batch direction)", ylim=(0, 1.05))
    xs = [bs for bs in sizes if numbers[bs].get("step_ms")]
    axes[0][1].plot(xs, [numbers[b]["step_ms"] for b in xs], marker="o", label="ms per step")
    axes[0][1].plot(xs, [numbers[b]["epoch_s"] for b in xs], marker="s", label="s per epoch")
    axes[0][1].set(xscale="log", yscale="log", xlabel="batch size",
                   title="training time (validation excluded)")
    _legend(axes[0][1], 7)
    for key, label in (("acc_epochs", "same epochs"), ("acc_time", "same wall clock")):
        xs = [bs for bs in sizes if numbers[bs].get(key) is not None]
        axes[0][2].plot(xs, [numbers[b][key] for b in xs], marker="o", label=label)
    axes[0][2].set(xscale="log", xlabel="batch size", ylabel="test accuracy %", title="accuracy")
    _legend(axes[0][2], 7)
    _save(fig, root / "lesson_batch_size.png")
    sentences = []
    noisy = [b for b in sizes if numbers[b].get("cosine_mean") is not None]
    if noisy:
        lo, hi = noisy[0], noisy[-1]
        sentences.append(
            f"The step's gradient agrees with the gradient on a fixed {numbers[lo]['subset']}-example "
            f"subset of the training set with cosine {numbers[lo]['cosine_mean']:.2f} at batch size "
            f"{lo} and {numbers[hi]['cosine_mean']:.2f} at {hi} (mean over training).")
    timed_steps = [b for b in sizes if numbers[b].get("step_ms")]
    if timed_steps:
        lo, hi = timed_steps[0], timed_steps[-1]
        a, b = numbers[lo], numbers[hi]
        sentences.append(
            f"A step costs {a['step_ms']:.2f} ms at {lo} and {b['step_ms']:.1f} ms at {hi} "
            f"({b['step_ms'] / a['step_ms']:.0f}x); an epoch {a['epoch_s']:.1f} s vs "
            f"{b['epoch_s']:.2f} s (training time without validation).")
    accs = {b: numbers[b] for b in sizes if numbers[b].get("acc_epochs") is not None}
    if accs:
        top = max(accs, key=lambda b: accs[b]["acc_epochs"])
        epochs = accs[top]["epochs"]
        sentences.append(
            f"Test accuracy after {epochs} epochs at the same rate: " + ", ".join(
                f"{b}: {pct(accs[b]['acc_epochs'])}" for b in accs) + f" (highest at {top}).")
    timed = {b: numbers[b] for b in sizes if numbers[b].get("acc_time") is not None}
    if timed:
        top = max(timed, key=lambda b: timed[b]["acc_time"])
        budget = _seconds(next(iter(timed.values()))["time_budget"])
        sentences.append(f"After the same {budget:g} s of fit (trainer.max_time): " + ", ".join(
            f"{b}: {pct(timed[b]['acc_time'])}" for b in timed) + f" (highest at {top}).")
    rows = ["| batch size | cosine to the subset gradient | ms per step | test acc, same epochs "
            "| test acc, same wall clock |", "|---|---|---|---|---|"]
    rows += [f"| {b} | {num(numbers[b].get('cosine_mean'))} | {num(numbers[b].get('step_ms'))} "
             f"| {pct(numbers[b].get('acc_epochs'))} | {pct(numbers[b].get('acc_time'))} |" for b in sizes]
    return LessonResult(sentences, "lesson_batch_size.png", rows, {str(k): v for k, v in numbers.items()})


def _update_ratio_mean(run: Run) -> list[tuple[int, float]]:
    """Mean over layers of update_ratio/<layer> (log10 std(dW)/std(W)) at each measured step."""
    per_step: dict[int, list[float]] = defaultdict(list)
    for tag in run.scalar_tags("update_ratio/"):
        for step, value in run.scalars(tag):
            if math.isfinite(value):
                per_step[step].append(value)
    return sorted((s, statistics.mean(v)) for s, v in per_step.items())


def _optimizers(runs: list[Run], root: Path) -> LessonResult:
    table = _by(runs, "optim", "optim.lr")
    names = _ordered((name for name, _ in table), ["sgd", "momentum", "adagrad", "rmsprop", "adam"])
    best: dict[str, Run] = {}
    rows = ["| optimizer | learning rate | best validation accuracy | test accuracy (the run's end) |",
            "|---|---|---|---|"]
    for name in names:
        candidates = sorted(((lr, run) for (opt, lr), run in table.items() if opt == name),
                            key=lambda pair: pair[0])
        scored = [run for _, run in candidates if best_val(run) is not None]
        if scored:
            best[name] = max(scored, key=best_val)
        for lr, run in candidates:
            chosen = " (best rate)" if best.get(name) is run else ""
            rows.append(f"| {name} | {lr:g}{chosen} | {pct(best_val(run))} | {outcome(run)} |")
    fig, axes = _panels(2)
    numbers, parts = {}, []
    for name, run in best.items():
        loss = run.scalars("train/loss")
        lr = choice(run, "optim.lr")
        if loss:
            axes[0][0].plot(*zip(*loss), label=f"{name} lr {lr:g}")
        ratio = _update_ratio_mean(run)
        if ratio:
            axes[0][1].plot(*zip(*ratio), label=f"{name} lr {lr:g}")
            k = max(1, len(ratio) // 10)
            early = statistics.mean(v for _, v in ratio[:k])
            late = statistics.mean(v for _, v in ratio[-k:])
            numbers[name] = {"lr": lr, "test_acc": test_acc(run), "update_ratio_log10_early": early,
                             "update_ratio_log10_late": late}
            parts.append(f"{name} (lr {lr:g}, test {outcome(run)}) {10 ** early:.1e} → {10 ** late:.1e}"
                         f" ({10 ** (late - early):.2g}x)")
    axes[0][0].set(xlabel="step", ylabel="training loss", yscale="log",
                   title="training loss (each optimizer at its best rate)")
    axes[0][1].set(xlabel="step", ylabel="log10 std(ΔW)/std(W), averaged over layers",
                   title="relative step size")
    for ax in axes[0]:
        _legend(ax, 7)
    _save(fig, root / "lesson_optimizers.png")
    sentences = []
    if parts:
        sentences.append("Relative step size std(ΔW)/std(W) (geometric mean over layers), first tenth of "
                         "training → last tenth, each optimizer at its best rate by validation: "
                         + "; ".join(parts) + ".")
    return LessonResult(sentences, "lesson_optimizers.png", rows, numbers)


def _vanishing(runs: list[Run], root: Path) -> LessonResult:
    acts = _ordered((r.activation for r in runs), ["sigmoid", "tanh"])
    variants = _ordered((r.init, bool(choice(r, "model.batchnorm"))) for r in runs)
    fig, axes = _panels(len(acts), rows=2)
    numbers, sentences = {}, []
    rows = ["| activation | init | batch norm | depth | backprop std first/last hidden at init "
            "| first layer relative change | test accuracy |", "|---|---|---|---|---|---|---|"]
    for col, act in enumerate(acts):
        for init, bn in variants:
            members = sorted((r for r in runs if r.activation == act and r.init == init
                              and bool(choice(r, "model.batchnorm")) == bn),
                             key=lambda r: choice(r, "model.depth"))
            depths, ratios, changes = [], [], []
            for run in members:
                back = [v for n, v in init_layer_stat(run, "backprop_std") if n != "out"]
                summary = weights(run)
                change = summary["layers"]["fc1"]["change_rel"] if summary else None
                ratio = back[0] / back[-1] if back and back[-1] else None
                depth = choice(run, "model.depth")
                numbers[f"{act}/{init}/bn={bn}/depth={depth}"] = {
                    "backprop_first_over_last": ratio, "fc1_change_rel": change,
                    "test_acc": test_acc(run)}
                rows.append(f"| {act} | {init} | {bn} | {depth} | {num(ratio)} | {num(change)} "
                            f"| {outcome(run)} |")
                depths.append(depth)
                ratios.append(ratio if ratio is not None else float("nan"))
                changes.append(change if change is not None else float("nan"))
            label = f"{init}{' + BN' if bn else ''}"
            axes[0][col].plot(depths, ratios, marker="o", label=label)
            axes[1][col].plot(depths, changes, marker="o", label=label)
        axes[0][col].set(title=f"{act}: backprop std first/last hidden, at init",
                         xlabel="depth", yscale="log")
        axes[1][col].set(title=f"{act}: first layer ‖ΔW‖/‖W0‖ after training (0: off the axis)",
                         xlabel="depth", yscale="log")
        _legend(axes[0][col], 7)
        _legend(axes[1][col], 7)
    _save(fig, root / "lesson_vanishing.png")
    depths = sorted({choice(r, "model.depth") for r in runs})
    if len(depths) >= 2:
        lo, hi = depths[0], depths[-1]
        steps = next(((r.result or {}).get("steps") for r in runs if r.result), None)
        for act in acts:
            parts = []
            for init, bn in variants:
                a = numbers.get(f"{act}/{init}/bn={bn}/depth={lo}", {})
                b = numbers.get(f"{act}/{init}/bn={bn}/depth={hi}", {})
                parts.append(f"{init}{' + batch norm' if bn else ''}: backprop std ratio first/last "
                             f"{num(a.get('backprop_first_over_last'))} at depth {lo} vs "
                             f"{num(b.get('backprop_first_over_last'))} at {hi}, first layer moved "
                             f"{num(a.get('fc1_change_rel'))} vs {num(b.get('fc1_change_rel'))} of its norm")
            sentences.append(f"{act} after {steps} steps — " + "; ".join(parts) + ".")
    return LessonResult(sentences, "lesson_vanishing.png", rows, numbers)


def _exploding(runs: list[Run], root: Path) -> LessonResult:
    order = ["too_large", "he", "clipping", "batchnorm"]
    arms = _ordered((choice(r, "arm/exploding") for r in runs), order)
    by_arm = _by(runs, "arm/exploding")
    fig, axes = _panels(2)
    numbers, parts = {}, []
    rows = ["| arm | backprop std at init, last hidden layer → first (fc1) | outcome |", "|---|---|---|"]
    for arm in arms:
        run = by_arm[(arm,)]
        back = init_layer_stat(run, "backprop_std")
        if back:
            axes[0][0].plot([n for n, _ in back], [v for _, v in back], marker="o", label=arm)
        loss = run.scalars("train/loss")
        if loss:
            axes[0][1].plot(*zip(*loss), label=arm)
        first, last = (back[0][1], back[-1][1]) if back else (None, None)
        numbers[arm] = {"backprop_std_first_layer": first, "backprop_std_last_hidden": last,
                        "growth_toward_input": first / last if back and last else None,
                        "status": run.status, "test_acc": test_acc(run),
                        "diverged_step": (run.result or {}).get("diverged_step")}
        rows.append(f"| {arm} | {num(last)} → {num(first)} | {outcome(run)} |")
        parts.append(f"{arm}: back-propagated gradient std ×{num(numbers[arm]['growth_toward_input'])} "
                     f"from the last hidden layer to the first, {outcome(run)}")
    axes[0][0].set(yscale="log", title="back-propagated gradient std per layer at init",
                   xlabel="layer (input → output)")
    axes[0][0].tick_params(axis="x", labelrotation=90, labelsize=7)
    axes[0][1].set(yscale="log", xlabel="step", ylabel="training loss", title="training loss")
    for ax in axes[0]:
        _legend(ax, 7)
    _save(fig, root / "lesson_exploding.png")
    depth = next((choice(r, "model.depth") for r in runs), "?")
    sentences = [f"{depth}-layer ReLU MLP, SGD — " + "; ".join(parts) + "."]
    return LessonResult(sentences, "lesson_exploding.png", rows, numbers)


def _final_train_acc(run: Run) -> float | None:
    value = metric(run, "train/acc_epoch")
    return None if value is None else 100 * value


def _gap_rows(runs: list[Run], key: str, order=None, label=str):
    """(value, run, train %, val %, gap) per value of ``key``."""
    out = []
    by_key = _by(runs, key)
    for (value,) in [(v,) for v in _ordered((choice(r, key) for r in runs), order)]:
        run = by_key[(value,)]
        train = _final_train_acc(run)
        val = metric(run, "val/acc")
        val = None if val is None else 100 * val
        out.append((value, run, train, val, None if train is None or val is None else train - val))
    return out


def _curves(ax, runs_labels, title):
    for run, label in runs_labels:
        train, val = run.scalars("train/acc_epoch"), run.scalars("val/acc")
        if train:
            line, = ax.plot(*zip(*[(s, 100 * v) for s, v in train]), label=f"{label} train")
            if val:
                ax.plot(*zip(*[(s, 100 * v) for s, v in val]), ls="--", color=line.get_color(),
                        label=f"{label} val")
    ax.set(xlabel="step", ylabel="accuracy %", title=title)
    _legend(ax, 6)


def _fitting(runs: list[Run], root: Path) -> LessonResult:
    data = _gap_rows(runs, "arm/fitting", ["underfit", "overfit", "regularized"])
    fig, axes = _panels(2)
    _curves(axes[0][0], [(run, arm) for arm, run, *_ in data], "train (solid) vs validation (dashed)")
    axes[0][1].bar([d[0] for d in data], [d[4] or 0 for d in data])
    axes[0][1].set(ylabel="train − validation accuracy, points", title="generalisation gap")
    _save(fig, root / "lesson_fitting.png")
    numbers = {arm: {"train_acc": t, "val_acc": v, "gap": g, "test_acc": test_acc(run)}
               for arm, run, t, v, g in data}
    parts = [f"{arm}: train {pct(t)}, validation {pct(v)} (gap {num(g, 2)} points), test {outcome(run)}"
             for arm, run, t, v, g in data]
    rows = ["| arm | train accuracy (last epoch) | validation | gap | test |", "|---|---|---|---|---|"]
    rows += [f"| {arm} | {pct(t)} | {pct(v)} | {num(g, 2)} | {outcome(run)} |"
             for arm, run, t, v, g in data]
    sentence = ("Training accuracy is the last epoch's running mean over its batches, as trained "
                "(for regularized: dropout and augmentation on). " + "; ".join(parts) + ".")
    return LessonResult([sentence], "lesson_fitting.png", rows, numbers)


def _weight_totals(run: Run) -> dict | None:
    summary = weights(run)
    if summary is None:
        return None
    layers = (run.init_stats or {}).get("layers", {})
    # units (output features or channels) x fan_in (inputs per unit) = the weight's size
    numel = {n: s["units"] * layers[n]["fan_in"] for n, s in summary["layers"].items()
             if "fan_in" in layers.get(n, {})}
    near = sum(s["near_zero_fraction"] * numel.get(n, 0) for n, s in summary["layers"].items())
    count = sum(numel.get(n, 0) for n in summary["layers"])
    return {"near_zero_fraction": near / count if count else None,
            "weight_l2": math.sqrt(sum(s["weight_l2"] ** 2 for s in summary["layers"].values())),
            "weight_l1": sum(s["weight_l1"] for s in summary["layers"].values()),
            "threshold": summary.get("near_zero_threshold")}


def _l1_l2(runs: list[Run], root: Path) -> LessonResult:
    table = _by(runs, "l1", "l2")
    numbers, rows = {}, ["| l1 | l2 | weights with \\|w\\| < threshold | ‖W‖₂ (all layers) | test accuracy |",
                         "|---|---|---|---|---|"]
    for (l1, l2), run in sorted(table.items()):
        totals = _weight_totals(run) or {}
        numbers[f"l1={l1:g},l2={l2:g}"] = {**totals, "test_acc": test_acc(run)}
        frac = totals.get("near_zero_fraction")
        rows.append(f"| {l1:g} | {l2:g} | {pct(None if frac is None else 100 * frac)} "
                    f"| {num(totals.get('weight_l2'))} | {outcome(run)} |")
    fig, axes = _panels(3)
    for penalty in ("l1", "l2"):
        xs = sorted({k[0 if penalty == "l1" else 1] for k in table})
        pts = []
        for x in xs:
            key = (x, 0.0) if penalty == "l1" else (0.0, x)
            run = table.get(key)
            if run is not None:
                t = _weight_totals(run) or {}
                pts.append((x, t.get("near_zero_fraction"), t.get("weight_l2"), test_acc(run)))
        pts = [p for p in pts if p[1] is not None]
        if not pts:
            continue
        labels = [f"{p[0]:g}" for p in pts]
        axes[0][0].plot(labels, [100 * p[1] for p in pts], marker="o", label=f"{penalty} only")
        axes[0][1].plot(labels, [p[2] for p in pts], marker="o", label=f"{penalty} only")
        axes[0][2].plot(labels, [p[3] or 0 for p in pts], marker="o", label=f"{penalty} only")
    axes[0][0].set(xlabel="coefficient", ylabel="% of weights with |w| < 1e-3 (weights.json)",
                   title="sparsity")
    axes[0][1].set(xlabel="coefficient", ylabel="‖W‖₂", title="weight norm")
    axes[0][2].set(xlabel="coefficient", ylabel="test accuracy %", title="accuracy")
    for ax in axes[0]:
        _legend(ax, 7)
    _save(fig, root / "lesson_l1_l2.png")

    def describe(key):
        n = numbers.get(key)
        if not n or n.get("near_zero_fraction") is None:
            return None
        return (f"{100 * n['near_zero_fraction']:.1f}% of weights below {n['threshold']:g} in magnitude, "
                f"‖W‖₂ {num(n['weight_l2'])}, {pct(n['test_acc'])}")
    l1s = sorted({k[0] for k in table if k[1] == 0 and k[0] > 0})
    l2s = sorted({k[1] for k in table if k[0] == 0 and k[1] > 0})
    parts = [f"no penalty: {describe('l1=0,l2=0')}"]
    if l1s:
        parts.append(f"L1 {l1s[-1]:g}: {describe(f'l1={l1s[-1]:g},l2=0')}")
    if l2s:
        parts.append(f"L2 {l2s[-1]:g}: {describe(f'l1=0,l2={l2s[-1]:g}')}")
    sentence = "; ".join(p for p in parts if not p.endswith("None")) + "."
    return LessonResult([sentence], "lesson_l1_l2.png", rows, numbers)


def _dropout(runs: list[Run], root: Path) -> LessonResult:
    data = _gap_rows(runs, "model.dropout")
    fig, axes = _panels(2)
    _curves(axes[0][0], [(run, f"p={p:g}") for p, run, *_ in data],
            "train (solid, dropout on) vs validation (dashed)")
    rates = [f"{d[0]:g}" for d in data]
    axes[0][1].plot(rates, [d[4] if d[4] is not None else float("nan") for d in data], marker="o")
    axes[0][1].set(xlabel="dropout rate", ylabel="train − validation accuracy, points (circles)",
                   title="gap and test accuracy")
    right = axes[0][1].twinx()
    right.plot(rates, [test_acc(d[1]) or float("nan") for d in data], marker="s", color="C1")
    right.set_ylabel("test accuracy % (squares)")
    _save(fig, root / "lesson_dropout.png")
    numbers = {f"{p:g}": {"train_acc": t, "val_acc": v, "gap": g, "test_acc": test_acc(run)}
               for p, run, t, v, g in data}
    n_train = next((choice(r, "data.train_samples") for r in runs), None)
    parts = [f"p={p:g}: gap {num(g, 2)} points, test {outcome(run)}" for p, run, t, v, g in data]
    sentence = (f"On {n_train} training examples (training accuracy: the last epoch's running mean, "
                f"dropout on): " + "; ".join(parts) + ".")
    rows = ["| dropout | train accuracy (last epoch, dropout on) | validation | gap | test |",
            "|---|---|---|---|---|"]
    rows += [f"| {p:g} | {pct(t)} | {pct(v)} | {num(g, 2)} | {outcome(run)} |" for p, run, t, v, g in data]
    return LessonResult([sentence], "lesson_dropout.png", rows, numbers)


def _corrupt_levels(run: Run, kind: str) -> list[tuple[float, float]]:
    prefix = f"test_corrupt/{kind}_"
    metrics = (run.result or {}).get("metrics", {})
    return sorted((float(k[len(prefix):-len("/acc")]), 100 * v) for k, v in metrics.items()
                  if k.startswith(prefix) and k.endswith("/acc"))


def _augmentation(runs: list[Run], root: Path) -> LessonResult:
    by_aug = {aug or "none": run for (aug,), run in _by(runs, "augment").items()}
    augs = _ordered(by_aug, ["none", "noise", "skew", "noise_skew"])
    fig, axes = _panels(2)
    numbers, rows = {}, []
    kinds = ("noise", "skew")
    # every level any run was tested at; a run without one gets "-" in its column
    levels = {k: sorted({lv for r in runs for lv, _ in _corrupt_levels(r, k)}) for k in kinds}
    rows = ["| augmentation | clean | " + " | ".join(f"{k} {lv:g}" for k in kinds for lv in levels[k])
            + " |", "|---" * (2 + sum(len(v) for v in levels.values())) + "|"]
    for aug in augs:
        run = by_aug[aug]
        numbers[aug] = {"clean": test_acc(run)}
        cells = []
        for col, kind in enumerate(kinds):
            pts = _corrupt_levels(run, kind)
            numbers[aug][kind] = {f"{lv:g}": acc for lv, acc in pts}
            if pts:
                axes[0][col].plot(*zip(*pts), marker="o", label=aug)
            cells += [pct(dict(pts).get(lv)) for lv in levels[kind]]
        rows.append(f"| {aug} | {pct(numbers[aug]['clean'])} | " + " | ".join(cells) + " |")
    axes[0][0].set(xlabel="noise std of the test images", ylabel="test accuracy %",
                   title="Gaussian noise")
    axes[0][1].set(xlabel="shear angle of the test images (degrees)", title="skew")
    for ax in axes[0]:
        _legend(ax, 7)
    _save(fig, root / "lesson_augmentation.png")
    sentences = []
    for kind, aug in (("noise", "noise"), ("skew", "skew")):
        if levels[kind] and "none" in numbers and aug in numbers:
            top = f"{levels[kind][-1]:g}"
            sentences.append(
                f"Test images with {kind} {top}: {pct(numbers['none'][kind].get(top))} without "
                f"augmentation, {pct(numbers[aug][kind].get(top))} trained with {aug}"
                + (f", {pct(numbers['noise_skew'][kind].get(top))} with both" if "noise_skew" in numbers
                   else "") + ".")
    if "none" in numbers:
        sentences.append("Clean test set: " + ", ".join(f"{a} {pct(numbers[a]['clean'])}"
                                                        for a in numbers) + ".")
    return LessonResult(sentences, "lesson_augmentation.png", rows, numbers)


DRAW: dict[str, Callable[[list[Run], Path], LessonResult]] = {
    "symmetry": _symmetry, "naive_init": _naive_init, "xavier_variants": _xavier_variants,
    "learning_rate": _learning_rate, "batch_size": _batch_size, "optimizers": _optimizers,
    "vanishing": _vanishing, "exploding": _exploding, "fitting": _fitting, "l1_l2": _l1_l2,
    "dropout": _dropout, "augmentation": _augmentation,
}


def lesson_section(root: str | Path, runs: list[Run]) -> list[str]:
    """report.md lines for the sweep's lesson (empty when it is not a lesson); writes its figure
    and ``lesson.json``."""
    topic = lesson_topic(runs)
    if topic is None:
        return []
    root = Path(root)
    number, title, claim = LESSONS[topic]
    SHARED.clear()
    result = DRAW[topic](runs, root)
    finished = sum(r.result is not None for r in runs)
    record = {"topic": topic, "number": number, "title": title, "claim": claim,
              "runs": len(runs), "finished": finished, "sentences": result.sentences,
              "figure": result.figure, "numbers": result.numbers,
              "shared_configurations": list(SHARED)}
    atomic_write(root / "lesson.json", json.dumps(record, indent=2, default=str).encode())
    lines = [f"## Lesson {number}: {title}", "", f"*The lesson says:* {claim}", "",
             "*Measured here:* " + " ".join(result.sentences), ""]
    if finished < len(runs):
        lines += [f"(from {finished} of {len(runs)} runs: the others have no result.json)", ""]
    if SHARED:
        lines += [f"**Note:** several runs share the configuration(s) {', '.join(SHARED)} (another "
                  "swept setting or seed): the lesson shows the first of each, in job order.", ""]
    if result.figure:
        lines += [f"![{title}]({result.figure})", ""]
    lines += result.table + [""]
    return lines
