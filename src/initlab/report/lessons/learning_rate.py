"""Lesson 4: the learning rate, too small and too large, and Lightning's range test."""

from __future__ import annotations

import math

from initlab.report.collect import Run
from initlab.report.lessons.common import (
    best_val_pct,
    by,
    choice,
    fixed,
    fmt_outcome,
    integer,
    legend,
    num,
    outcome,
    panels,
    pick,
    read_json,
    save,
    steps_of,
    style,
)

TITLE = {"en": "The learning rate", "pt-BR": "A taxa de aprendizagem"}
CLAIM = {"en": "Small learning rates can take forever and may never converge in reasonable "
               "time; large ones overshoot the minimum and never converge.",
         "pt-BR": "Com uma taxa de aprendizagem pequena o treino pode demorar uma eternidade e "
                  "não convergir em tempo razoável; com uma grande, ele passa do mínimo e nunca "
                  "converge."}
LR_FIND_SKIP = 10  # lightning.pytorch.tuner.lr_finder: suggestion(skip_begin=10)


def measure(runs: list[Run]) -> dict:
    table, shared = by(runs, "optim.lr")
    numbers: dict = {"rates": sorted(lr for lr, in table), "steps": steps_of(runs),
                     "shared": shared}
    for (lr,), run in table.items():
        loss = run.scalars("train/loss")
        numbers[f"{lr:g}"] = {"lr": lr, "outcome": outcome(run), "test_acc_pct": outcome(run)["test_acc_pct"],
                              "status": outcome(run)["status"], "best_val_acc_pct": best_val_pct(run),
                              "diverged_step": (run.result or {}).get("diverged_step"),
                              "loss": [list(p) for p in loss],
                              "first_loss": loss[0][1] if loss else None,
                              "last_loss": loss[-1][1] if loss else None}
    scored = [lr for lr in numbers["rates"] if numbers[f"{lr:g}"]["best_val_acc_pct"] is not None
              and numbers[f"{lr:g}"]["test_acc_pct"] is not None]
    numbers["best_lr"] = (max(scored, key=lambda lr: numbers[f"{lr:g}"]["best_val_acc_pct"])
                          if scored else None)
    found = next(((f, r) for r in runs if (f := read_json(r, "lr_find.json"))), None)
    if found:
        found, run = found
        # Lightning's running mean is biased low over its first steps: drop the first
        # LR_FIND_SKIP points, as its own suggestion does
        curve = [[lr, loss] for lr, loss in list(zip(found["lr"], found["loss"]))[LR_FIND_SKIP:]
                 if loss is not None and math.isfinite(loss)]
        numbers["lr_find"] = {
            "curve": curve, "start": found["lr"][0], "steps": len(found["lr"]),
            "planned": found["num_training"], "last": found["lr"][-1],
            "threshold": choice(run, "tune.early_stop_threshold"),
            "lowest": min(curve, key=lambda p: p[1])[0] if curve else None}
        numbers["lr_find_suggestion"] = found.get("suggestion")
        numbers["lr_find_lowest_loss_lr"] = numbers["lr_find"]["lowest"]
    return numbers


def _rate(n: dict, lr: float) -> dict:
    return n[f"{lr:g}"]


def _slow(r: dict) -> bool:
    """The loss moved by less than a tenth over the run."""
    return r["first_loss"] is not None and r["last_loss"] is not None and \
        abs(r["last_loss"] - r["first_loss"]) < 0.1 * r["first_loss"]


def _no_convergence(r: dict, best: dict) -> bool:
    return r["status"] == "diverged" or (
        r["last_loss"] is not None and best["last_loss"] is not None
        and r["last_loss"] > 10 * best["last_loss"] and r["status"] == "stalled")


def describe(n: dict, lang: str) -> list[str]:
    out = []
    if n.get("best_lr") is not None:
        best, small, large = (_rate(n, lr) for lr in (n["best_lr"], n["rates"][0], n["rates"][-1]))
        text = pick(lang, f"In {n['steps']} SGD steps the best rate by validation, {best['lr']:g}, "
                          f"reaches {fmt_outcome(best['outcome'], lang)} test accuracy",
                    f"Em {n['steps']} passos de SGD, a melhor taxa pela validação, "
                    f"{num(best['lr'], lang)}, chega a {fmt_outcome(best['outcome'], lang)} de "
                    f"acurácia de teste")
        if small is not best and small["test_acc_pct"] is not None:
            gap = best["test_acc_pct"] - small["test_acc_pct"]
            where = pick(lang, "below" if gap > 0 else "above", "abaixo" if gap > 0 else "acima")
            moves = _slow(small)
            text += pick(lang, f"; the smallest, {small['lr']:g}, reaches "
                               f"{fmt_outcome(small['outcome'], lang)}, "
                               f"{fixed(abs(gap), lang)} points {where}, its loss "
                               f"{'barely moving' if moves else 'falling'} "
                               f"({num(small['first_loss'], lang)} → {num(small['last_loss'], lang)})",
                         f"; a menor, {num(small['lr'], lang)}, chega a "
                         f"{fmt_outcome(small['outcome'], lang)}, "
                         f"{fixed(abs(gap), lang)} pontos {where}, com a perda "
                         f"{'quase parada' if moves else 'caindo'} "
                         f"({num(small['first_loss'], lang)} → {num(small['last_loss'], lang)})")
        if large is not best:
            if large["status"] in ("running", "failed"):
                text += pick(lang, f"; the largest, {large['lr']:g}: {fmt_outcome(large['outcome'], lang)}",
                             f"; a maior, {num(large['lr'], lang)}: {fmt_outcome(large['outcome'], lang)}")
            elif large["status"] == "diverged":
                text += pick(lang, f"; the largest, {large['lr']:g}, diverged (loss not finite) at "
                                   f"step {large['diverged_step']}",
                             f"; a maior, {num(large['lr'], lang)}, divergiu (perda não finita) no "
                             f"passo {large['diverged_step']}")
            else:
                stuck = _no_convergence(large, best)
                text += pick(lang, f"; the largest, {large['lr']:g}, "
                                   + ("never converges" if stuck else "still trains")
                                   + f": training loss {num(large['first_loss'], lang)} at the first "
                                     f"logged step, {num(large['last_loss'], lang)} at the last "
                                     f"(the best rate ends at {num(best['last_loss'], lang)}), "
                                     f"{fmt_outcome(large['outcome'], lang)}",
                             f"; a maior, {num(large['lr'], lang)}, "
                             + ("nunca converge" if stuck else "ainda treina")
                             + f": perda de treino {num(large['first_loss'], lang)} no primeiro "
                               f"passo registrado e {num(large['last_loss'], lang)} no último (a "
                               f"melhor taxa termina em {num(best['last_loss'], lang)}), "
                               f"{fmt_outcome(large['outcome'], lang)}")
        out.append(text + ".")
    found = n.get("lr_find")
    if found and found["lowest"] is not None:
        stopped = found["steps"] < found["planned"]
        sugg = n.get("lr_find_suggestion")
        text = pick(lang, f"The range test (Lightning's lr_find: {found['steps']} steps of a rate "
                          f"growing from {num(found['start'], lang)}"
                          + (f", stopped at {num(found['last'], lang)} once the loss passed "
                             f"{num(found['threshold'], lang)} times its best" if stopped else "")
                          + f") has its lowest smoothed loss at {num(found['lowest'], lang)}",
                    f"O teste de faixa (lr_find do Lightning: {found['steps']} passos com a taxa "
                    f"crescendo a partir de {num(found['start'], lang)}"
                    + (f", interrompido em {num(found['last'], lang)} quando a perda passou de "
                       f"{num(found['threshold'], lang)} vezes a melhor" if stopped else "")
                    + f") tem a menor perda suavizada em {num(found['lowest'], lang)}")
        if sugg:
            smaller = sugg < found["lowest"]
            factor = found["lowest"] / sugg if smaller else sugg / found["lowest"]
            times = integer(round(factor), lang) if factor >= 100 else num(factor, lang, 2)
            text += pick(lang, f"; Lightning suggests {num(sugg, lang)}, {times} times "
                               f"{'smaller' if smaller else 'larger'} (it takes the steepest slope of "
                               f"the loss against the rate itself, not its logarithm)",
                         f"; o Lightning sugere {num(sugg, lang)}, {times} vezes "
                         f"{'menor' if smaller else 'maior'} (ele usa a maior inclinação da perda "
                         f"em relação à própria taxa, não ao seu logaritmo)")
        out.append(text + ".")
    return out


def table(n: dict, lang: str) -> list[str]:
    rows = [pick(lang, "| learning rate | best validation | test accuracy | training loss first → last |",
                 "| taxa de aprendizagem | melhor validação | acurácia de teste | perda de treino "
                 "primeira → última |"),
            "|---|---|---|---|"]
    for lr in n["rates"]:
        r = _rate(n, lr)
        best = pick(lang, " (best)", " (melhor)") if lr == n.get("best_lr") else ""
        val = "-" if r["best_val_acc_pct"] is None else f"{fixed(r['best_val_acc_pct'], lang)}%"
        rows.append(f"| {num(lr, lang)}{best} | {val} | {fmt_outcome(r['outcome'], lang)} "
                    f"| {num(r['first_loss'], lang)} → {num(r['last_loss'], lang)} |")
    return rows


def verdicts(n: dict, lang: str) -> list[tuple[str, str, str]]:
    if n.get("best_lr") is None:
        return []
    best, small, large = (_rate(n, lr) for lr in (n["best_lr"], n["rates"][0], n["rates"][-1]))
    out = []
    far = small["test_acc_pct"] is not None and small["test_acc_pct"] < best["test_acc_pct"] - 20
    out.append((pick(lang, "A small learning rate may not converge in reasonable time",
                     "Uma taxa de aprendizagem pequena pode não convergir em tempo razoável"),
                "confirmed" if far and _slow(small) else "qualified" if far else "contradicted",
                f"{num(small['lr'], lang)}: {fmt_outcome(small['outcome'], lang)}, "
                + pick(lang, "loss ", "perda ")
                + f"{num(small['first_loss'], lang)} → {num(small['last_loss'], lang)} "
                + pick(lang, f"in {n['steps']} steps; {best['lr']:g}: ",
                       f"em {n['steps']} passos; {num(best['lr'], lang)}: ")
                + fmt_outcome(best["outcome"], lang)))
    stuck = _no_convergence(large, best)
    out.append((pick(lang, "A large learning rate overshoots and never converges",
                     "Uma taxa de aprendizagem grande passa do mínimo e nunca converge"),
                "confirmed" if stuck else "contradicted",
                f"{num(large['lr'], lang)}: "
                + (fmt_outcome(large["outcome"], lang) if large["status"] == "diverged" else
                   pick(lang, "loss ", "perda ") + f"{num(large['first_loss'], lang)} → "
                   f"{num(large['last_loss'], lang)}, {fmt_outcome(large['outcome'], lang)}")))
    return out


def draw(n: dict, lang: str, path) -> None:
    fig, axes = panels(3)
    ax = axes[0][0]
    rates = n["rates"]
    accs = [_rate(n, lr)["test_acc_pct"] for lr in rates]
    ax.plot(rates, [a if a is not None else math.nan for a in accs], marker="o")
    for lr in rates:
        r = _rate(n, lr)
        if r["status"] in ("stalled", "diverged"):
            word = {"stalled": pick(lang, "stalled", "estagnada"),
                    "diverged": pick(lang, "diverged", "divergiu")}[r["status"]]
            ax.annotate(word, (lr, (r["test_acc_pct"] or 10) + 4), ha="center", fontsize=8, rotation=90,
                        va="bottom")
    ax.set(xscale="log", xlabel=pick(lang, "learning rate (SGD)", "taxa de aprendizagem (SGD)"),
           ylabel=pick(lang, "test accuracy (%)", "acurácia de teste (%)"),
           title=pick(lang, "accuracy at the end of training", "acurácia ao fim do treino"), ylim=(0, 100),
           xlim=(min(rates) / 2, max(rates) * 2))  # a diverged rate has no point: keep its note in view
    ax = axes[0][1]
    for i, lr in enumerate(rates):
        r = _rate(n, lr)
        if r["loss"]:
            ax.plot(*zip(*r["loss"]), label=pick(lang, f"rate {lr:g}", f"taxa {num(lr, lang)}"),
                    **{**style(i), "markevery": max(1, len(r["loss"]) // 6)})
    ax.set(xlabel=pick(lang, "step", "passo"), ylabel=pick(lang, "training loss (log scale)",
                                                             "perda de treino (escala log)"),
           yscale="log", title=pick(lang, "training loss", "perda de treino"))
    legend(ax, lang, ncol=2)
    ax = axes[0][2]
    found = n.get("lr_find")
    if found and found["curve"]:
        ax.plot(*zip(*found["curve"]), color="C0")
        ax.axvline(found["lowest"], color="g", ls=":", lw=2,
                   label=pick(lang, f"lowest loss {num(found['lowest'], lang)}",
                              f"menor perda {num(found['lowest'], lang)}"))
        if n.get("lr_find_suggestion"):
            ax.axvline(n["lr_find_suggestion"], color="r", ls="--",
                       label=pick(lang, f"Lightning's suggestion {num(n['lr_find_suggestion'], lang)}",
                                  f"sugestão do Lightning {num(n['lr_find_suggestion'], lang)}"))
        legend(ax, lang)
        ax.set(xscale="log", xlabel=pick(lang, "learning rate", "taxa de aprendizagem"),
               ylabel=pick(lang, "smoothed training loss", "perda de treino suavizada"),
               title=pick(lang, f"range test (lr_find), from its point {LR_FIND_SKIP}",
                          f"teste de faixa (lr_find), a partir do ponto {LR_FIND_SKIP}"))
    save(fig, path, lang)
