"""Lesson 6: SGD, momentum, AdaGrad, RMSProp and Adam: the relative step size over training."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

from initlab.report.collect import Run
from initlab.report.lessons.common import (
    best_val_pct,
    by,
    fixed,
    fmt_outcome,
    join,
    legend,
    num,
    ordered,
    outcome,
    panels,
    pct,
    percent_curve,
    pick,
    save,
    style,
)

TITLE = {"en": "AdaGrad, RMSProp, Adam", "pt-BR": "AdaGrad, RMSProp, Adam"}
CLAIM = {"en": "AdaGrad, RMSProp and Adam let training start with larger steps and move to "
               "smaller ones; Adam does it automatically.",
         "pt-BR": "AdaGrad, RMSProp e Adam permitem começar o treino com passos maiores e passar "
                  "a passos menores; o Adam faz isso automaticamente."}
ORDER = ["sgd", "momentum", "adagrad", "rmsprop", "adam"]
ADAPTIVE = ("adagrad", "rmsprop", "adam")
NAME = {"sgd": "SGD", "momentum": "momentum", "adagrad": "AdaGrad", "rmsprop": "RMSProp", "adam": "Adam"}


def update_ratio_mean(run: Run) -> list[list[float]]:
    """Mean over layers of update_ratio/<layer> (log10 std(dW)/std(W)) at each measured step."""
    per_step: dict[int, list[float]] = defaultdict(list)
    for tag in run.scalar_tags("update_ratio/"):
        for step, value in run.scalars(tag):
            if math.isfinite(value):
                per_step[step].append(value)
    return [[s, statistics.mean(v)] for s, v in sorted(per_step.items())]


def measure(runs: list[Run]) -> dict:
    table, shared = by(runs, "optim", "optim.lr")
    names = ordered((name for name, _ in table), ORDER)
    grid, best = {}, {}
    for name in names:
        rows = sorted(((lr, run) for (opt, lr), run in table.items() if opt == name),
                      key=lambda pair: pair[0])
        grid[name] = [{"lr": lr, "best_val_acc_pct": best_val_pct(run), "outcome": outcome(run)}
                      for lr, run in rows]
        scored = [(lr, run) for lr, run in rows if best_val_pct(run) is not None]
        if not scored:
            continue
        lr, run = max(scored, key=lambda pair: best_val_pct(pair[1]))
        ratio = update_ratio_mean(run)
        k = max(1, len(ratio) // 10)
        best[name] = {"lr": lr, "best_val_acc_pct": best_val_pct(run), "outcome": outcome(run),
                      "test_acc_pct": outcome(run)["test_acc_pct"],
                      "loss": [list(p) for p in run.scalars("train/loss")],
                      "val": percent_curve(run, "val/acc"), "ratio": ratio,
                      "step_early": 10 ** statistics.mean(v for _, v in ratio[:k]) if ratio else None,
                      "step_late": 10 ** statistics.mean(v for _, v in ratio[-k:]) if ratio else None}
    return {"grid": grid, "best": best, "shared": shared}


def describe(n: dict, lang: str) -> list[str]:
    best = {k: v for k, v in n["best"].items() if v["step_early"]}
    out = []
    if not best:
        return [pick(lang, "No run has both a validation score and step sizes yet.",
                     "Nenhuma execução tem ainda acurácia de validação e tamanhos de passo.")]
    steps = join([f"{NAME[k]} {num(v['step_early'], lang, 2)} → {num(v['step_late'], lang, 2)}"
                  for k, v in best.items()], lang)
    shrink = [k for k, v in best.items() if v["step_late"] < v["step_early"]]
    everyone = len(shrink) == len(best)
    out.append(pick(lang, f"The relative step std(ΔW)/std(W) (mean of log10 over layers), first tenth "
                          f"of training → last tenth, each optimizer at its best rate by validation: "
                          f"{steps}. " + ("Every method's step shrinks, plain SGD's too, which has no "
                                          "schedule and adapts nothing: shrinking is not the adaptive "
                                          "methods' own." if everyone else
                                          f"It shrinks for {join([NAME[k] for k in shrink], lang)} only."),
                    f"O passo relativo std(ΔW)/std(W) (média do log10 nas camadas), do primeiro "
                    f"décimo do treino ao último, com cada otimizador na sua melhor taxa pela "
                    f"validação: {steps}. " + ("O passo de todos diminui, inclusive o do SGD puro, "
                                               "que não tem agenda de taxa nem se adapta: diminuir "
                                               "não é exclusividade dos métodos adaptativos."
                                               if everyone else
                                               f"Ele só diminui para "
                                               f"{join([NAME[k] for k in shrink], lang)}.")))
    sgd = best.get("sgd")
    adaptive = [k for k in ADAPTIVE if k in best]
    if sgd and adaptive:
        larger = [k for k in adaptive if best[k]["step_early"] > sgd["step_early"]]
        smaller = [k for k in adaptive if k not in larger]
        more = [k for k in adaptive if best[k]["step_late"] / best[k]["step_early"]
                < sgd["step_late"] / sgd["step_early"]]
        parts = []
        if larger:
            parts.append(pick(lang, f"{join([NAME[k] for k in larger], lang)} start with larger steps "
                                    f"than plain SGD ({num(sgd['step_early'], lang, 2)})",
                              f"{join([NAME[k] for k in larger], lang)} começam com passos maiores "
                              f"que o SGD puro ({num(sgd['step_early'], lang, 2)})"))
        if smaller:
            parts.append(pick(lang, f"{join([NAME[k] for k in smaller], lang)} "
                                    f"{'does' if len(smaller) == 1 else 'do'} not: "
                                    + join([num(best[k]['step_early'], lang, 2) for k in smaller], lang)
                                    + f" against SGD's {num(sgd['step_early'], lang, 2)}",
                              f"{join([NAME[k] for k in smaller], lang)} não: "
                              + join([num(best[k]['step_early'], lang, 2) for k in smaller], lang)
                              + f" contra {num(sgd['step_early'], lang, 2)} do SGD"))
        ratio_sgd = sgd["step_late"] / sgd["step_early"]
        parts.append(pick(lang, (f"{join([NAME[k] for k in more], lang)} shrink more than SGD "
                                 f"({num(ratio_sgd, lang, 2)}x)" if more else
                                 f"none shrinks more than SGD ({num(ratio_sgd, lang, 2)}x)"),
                          (f"{join([NAME[k] for k in more], lang)} diminuem mais que o SGD "
                           f"({num(ratio_sgd, lang, 2)}x)" if more else
                           f"nenhum diminui mais que o SGD ({num(ratio_sgd, lang, 2)}x)")))
        out.append("; ".join(parts)[0].upper() + "; ".join(parts)[1:] + ".")
    for k, v in best.items():
        if v["test_acc_pct"] is not None and v["best_val_acc_pct"] - v["test_acc_pct"] > 3:
            last = v["val"][-1][1] if v["val"] else None
            out.append(pick(lang, f"{NAME[k]}'s best validation accuracy "
                                  f"({pct(v['best_val_acc_pct'], lang)}) "
                                  f"is not where it ends: its test accuracy at the end of the run is "
                                  f"{fmt_outcome(v['outcome'], lang)}, "
                                  f"{fixed(v['best_val_acc_pct'] - v['test_acc_pct'], lang)} "
                                  f"points lower; its last validation check reads {pct(last, lang)} (right).",
                            f"A melhor acurácia de validação do {NAME[k]} "
                            f"({pct(v['best_val_acc_pct'], lang)}) "
                            f"não é onde ele termina: a acurácia de teste no fim da execução é "
                            f"{fmt_outcome(v['outcome'], lang)}, "
                            f"{fixed(v['best_val_acc_pct'] - v['test_acc_pct'], lang)} "
                            f"pontos abaixo; a última validação marca {pct(last, lang)} (à direita)."))
    failed = {k: [r["lr"] for r in rows if r["outcome"]["status"] in ("stalled", "diverged")]
              for k, rows in n["grid"].items()}
    failed = {k: v for k, v in failed.items() if v}
    if failed:
        out.append(pick(lang, "Runs that stalled near chance: ", "Execuções estagnadas perto do acaso: ")
                   + "; ".join(f"{NAME.get(k, k)} " + pick(lang, "at ", "com ")
                               + join([num(lr, lang) for lr in v], lang) for k, v in failed.items()) + ".")
    return out


def table(n: dict, lang: str) -> list[str]:
    rows = [pick(lang, "| optimizer | learning rate | best validation accuracy | test accuracy (the "
                       "run's end) |",
                 "| otimizador | taxa de aprendizagem | melhor acurácia de validação | acurácia de "
                 "teste (fim da execução) |"),
            "|---|---|---|---|"]
    for name, grid in n["grid"].items():
        for r in grid:
            best = n["best"].get(name, {}).get("lr") == r["lr"]
            chosen = pick(lang, " (best rate)", " (melhor taxa)") if best else ""
            rows.append(f"| {NAME.get(name, name)} | {num(r['lr'], lang)}{chosen} | "
                        f"{pct(r['best_val_acc_pct'], lang)} "
                        f"| {fmt_outcome(r['outcome'], lang)} |")
    return rows


def verdicts(n: dict, lang: str) -> list[tuple[str, str, str]]:
    best = {k: v for k, v in n["best"].items() if v["step_early"]}
    sgd = best.get("sgd")
    adaptive = [k for k in ADAPTIVE if k in best]
    if not sgd or not adaptive:
        return []
    ok = [k for k in adaptive if best[k]["step_early"] > sgd["step_early"]
          and best[k]["step_late"] < best[k]["step_early"]]
    verdict = "confirmed" if len(ok) == len(adaptive) else "qualified" if ok else "contradicted"
    number = "; ".join(f"{NAME[k]} {num(best[k]['step_early'], lang, 2)} → "
                       f"{num(best[k]['step_late'], lang, 2)}"
                       for k in ["sgd", *adaptive])
    return [(CLAIM[lang], verdict, number)]


def draw(n: dict, lang: str, path) -> None:
    fig, axes = panels(3)
    for i, (name, v) in enumerate(n["best"].items()):
        label = f"{NAME.get(name, name)} ({num(v['lr'], lang)})"
        look = {**style(i), "markevery": max(1, len(v["loss"]) // 8)}
        if v["loss"]:
            # a running mean over 5 logged points: the raw curves cross too often to tell apart
            steps, values = zip(*v["loss"])
            smooth = [statistics.mean(values[max(0, j - 4): j + 1]) for j in range(len(values))]
            axes[0][0].plot(steps, smooth, label=label, **look)
        if v["ratio"]:
            axes[0][1].plot(*zip(*v["ratio"]), label=label,
                            **{**style(i), "markevery": max(1, len(v["ratio"]) // 8)})
        if v["val"]:
            axes[0][2].plot(*zip(*v["val"]), label=label, **style(i))
    axes[0][0].set(xlabel=pick(lang, "step", "passo"), yscale="log",
                   ylabel=pick(lang, "training loss (mean of 5 points, log scale)",
                               "perda de treino (média de 5 pontos, escala log)"),
                   title=pick(lang, "training loss, each at its best rate",
                              "perda de treino, cada um na melhor taxa"))
    axes[0][1].set(xlabel=pick(lang, "step", "passo"), ylabel="log10 std(ΔW)/std(W)",
                   title=pick(lang, "relative step size (mean over layers)",
                              "passo relativo (média nas camadas)"))
    axes[0][2].set(xlabel=pick(lang, "step", "passo"),
                   ylabel=pick(lang, "validation accuracy (%)", "acurácia de validação (%)"),
                   title=pick(lang, "validation accuracy", "acurácia de validação"))
    for ax in axes[0]:
        legend(ax, lang)
    save(fig, path, lang)
