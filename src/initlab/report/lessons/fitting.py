"""Lesson 9: underfitting and overfitting, with the gap measured like for like: training
accuracy evaluated as validation is (evaluation mode, no augmentation, a fixed training subset)
at the same step."""

from __future__ import annotations

from initlab.report.collect import Run
from initlab.report.lessons.common import (
    by,
    choice,
    fixed,
    fmt_outcome,
    integer,
    legend,
    ordered,
    outcome,
    panels,
    pct,
    percent_curve,
    pick,
    save,
    style,
)

TITLE = {"en": "Overfitting and underfitting", "pt-BR": "Sobreajuste e sub-ajuste"}
CLAIM = {"en": "Overfitting fits the training data almost entirely but predicts new data wrongly; "
               "underfitting has not learned enough even on the training data; a balance is needed.",
         "pt-BR": "O sobreajuste (overfitting) acerta quase todos os dados de treino, mas erra nos "
                  "dados novos; o sub-ajuste (underfitting) não aprendeu o suficiente nem nos dados "
                  "de treino; é preciso um equilíbrio."}
ORDER = ["underfit", "overfit", "regularized"]
ARM = {"underfit": {"en": "underfit", "pt-BR": "sub-ajuste"},
       "overfit": {"en": "overfit", "pt-BR": "sobreajuste"},
       "regularized": {"en": "regularized", "pt-BR": "regularizado"}}


def gap_numbers(run: Run) -> dict:
    """Training accuracy (evaluated as validation is) and validation accuracy at the last step
    where both were measured, and the curves."""
    train, val = percent_curve(run, "train_eval/acc"), percent_curve(run, "val/acc")
    # both are measured at the end of the same validation, on the same weights; Lightning logs
    # its epoch-end val/acc one step index before the callback's global_step
    by_step = dict((s, v) for s, v in train)
    pairs = [(s, by_step.get(s, by_step.get(s + 1)), v) for s, v in val]
    pairs = [p for p in pairs if p[1] is not None]
    step, t, v = pairs[-1] if pairs else (None, None, None)
    return {"train_curve": train, "val_curve": val, "step": step, "train_acc_pct": t, "val_acc_pct": v,
            "gap": t - v if t is not None and v is not None else None,
            "subset": choice(run, "callbacks.train_eval.num_examples"),
            "train_samples": choice(run, "data.train_samples"),
            "outcome": outcome(run), "test_acc_pct": outcome(run)["test_acc_pct"]}


def measure(runs: list[Run]) -> dict:
    table, shared = by(runs, "arm/fitting")
    arms = {arm: gap_numbers(table[(arm,)]) for arm in ordered((a for a, in table), ORDER)}
    return {"arms": arms, "shared": shared}


def _name(arm: str, lang: str) -> str:
    return ARM.get(arm, {}).get(lang, arm)


def describe(n: dict, lang: str) -> list[str]:
    arms, out = n["arms"], []
    some = next((v for v in arms.values() if v["subset"]), None)
    if some:
        out.append(pick(lang, f"Training accuracy here is measured the way validation is: in "
                              f"evaluation mode (no dropout, no augmentation), on the first "
                              f"{integer(some['subset'], lang)} training examples (all of them when "
                              f"there are fewer), at the step of the last validation.",
                        f"A acurácia de treino aqui é medida como a de validação: em modo de "
                        f"avaliação (sem abandono, sem expansão de dados), nos primeiros "
                        f"{integer(some['subset'], lang)} exemplos de treino (todos, quando há "
                        f"menos), no passo da última validação."))
    under, over, reg = arms.get("underfit"), arms.get("overfit"), arms.get("regularized")
    if under and over and under["train_acc_pct"] is not None and over["train_acc_pct"] is not None:
        lower = under["train_acc_pct"] < over["train_acc_pct"] - 5
        learned_en = ("it has not learned even the training data" if lower
                      else "it fits the training data as well as the large model")
        learned_pt = ("não aprendeu nem os dados de treino" if lower
                      else "ajusta os dados de treino tão bem quanto o modelo grande")
        out.append(pick(lang, f"Underfit (2-2-4 units): training accuracy "
                              f"{pct(under['train_acc_pct'], lang)}, "
                              f"validation {pct(under['val_acc_pct'], lang)} "
                              f"(gap {fixed(under['gap'], lang)} "
                              f"points): {learned_en}"
                              f" ({pct(over['train_acc_pct'], lang)} for the overfit arm).",
                        f"Sub-ajuste (2-2-4 unidades): acurácia de treino "
                        f"{pct(under['train_acc_pct'], lang)}, "
                        f"validação {pct(under['val_acc_pct'], lang)} "
                        f"(diferença de {fixed(under['gap'], lang)} "
                        f"pontos): {learned_pt}"
                        f" ({pct(over['train_acc_pct'], lang)} no braço de sobreajuste)."))
    if over and over["train_acc_pct"] is not None:
        almost = over["train_acc_pct"] >= 98
        wider = over["gap"] > 2
        out.append(pick(lang, f"Overfit (the full CNN on {integer(over['train_samples'], lang)} examples): "
                              f"training accuracy {pct(over['train_acc_pct'], lang)}"
                              f"{' (it fits its training set almost entirely)' if almost else ''}, "
                              f"validation {pct(over['val_acc_pct'], lang)}: a gap of "
                              f"{fixed(over['gap'], lang)} points, "
                              f"{'what it memorised' if wider else 'little memorised'}.",
                        f"Sobreajuste (a CNN completa com {integer(over['train_samples'], lang)} exemplos): "
                        f"acurácia de treino {pct(over['train_acc_pct'], lang)}"
                        f"{' (acerta quase todo o conjunto de treino)' if almost else ''}, validação "
                        f"{pct(over['val_acc_pct'], lang)}: uma diferença de {fixed(over['gap'], lang)} "
                        f"pontos, {'o que ela decorou' if wider else 'pouco decorado'}."))
    if over and reg and over["gap"] is not None and reg["gap"] is not None:
        narrows = reg["gap"] < over["gap"]
        gain = (reg["test_acc_pct"] or 0) - (over["test_acc_pct"] or 0)
        out.append(pick(lang, f"Regularized (dropout, L2 and augmentation): training "
                              f"{pct(reg['train_acc_pct'], lang)}, "
                              f"validation {pct(reg['val_acc_pct'], lang)}; the "
                              f"gap {'narrows' if narrows else 'widens'} from {fixed(over['gap'], lang)} to "
                              f"{fixed(reg['gap'], lang)} points and test accuracy "
                              f"{'rises' if gain > 0 else 'falls'} by {fixed(abs(gain), lang)} points "
                              f"({fmt_outcome(over['outcome'], lang)} → "
                              f"{fmt_outcome(reg['outcome'], lang)}).",
                        f"Regularizado (abandono, L2 e expansão de dados): treino "
                        f"{pct(reg['train_acc_pct'], lang)}, validação {pct(reg['val_acc_pct'], lang)}; a "
                        f"diferença {'cai' if narrows else 'aumenta'} de {fixed(over['gap'], lang)} para "
                        f"{fixed(reg['gap'], lang)} pontos e a acurácia de teste "
                        f"{'sobe' if gain > 0 else 'cai'} {fixed(abs(gain), lang)} pontos "
                        f"({fmt_outcome(over['outcome'], lang)} → {fmt_outcome(reg['outcome'], lang)})."))
    return out


def table(n: dict, lang: str) -> list[str]:
    rows = [pick(lang, "| arm | step | training accuracy (evaluated) | validation | gap (points) | test |",
                 "| braço | passo | acurácia de treino (avaliada) | validação | diferença (pontos) "
                 "| teste |"),
            "|---|---|---|---|---|---|"]
    for arm, v in n["arms"].items():
        rows.append(f"| {_name(arm, lang)} | {integer(v['step'], lang)} | {pct(v['train_acc_pct'], lang)} "
                    f"| {pct(v['val_acc_pct'], lang)} | {fixed(v['gap'], lang)} | "
                    f"{fmt_outcome(v['outcome'], lang)} |")
    return rows


def verdicts(n: dict, lang: str) -> list[tuple[str, str, str]]:
    arms, out = n["arms"], []
    under, over, reg = arms.get("underfit"), arms.get("overfit"), arms.get("regularized")
    if over and over["gap"] is not None:
        out.append((pick(lang, "Overfitting fits the training data almost entirely but errs on new data",
                         "O sobreajuste acerta quase todo o treino, mas erra nos dados novos"),
                    "confirmed" if over["train_acc_pct"] >= 98 and over["gap"] > 2 else
                    "qualified" if over["gap"] > 0 else "contradicted",
                    pick(lang, "overfit: training ", "sobreajuste: treino ")
                    + f"{pct(over['train_acc_pct'], lang)}, " + pick(lang, "validation ", "validação ")
                    + pct(over["val_acc_pct"], lang)))
    if under and over and under["train_acc_pct"] is not None:
        out.append((pick(lang, "Underfitting has not learned enough even on the training data",
                         "O sub-ajuste não aprendeu o suficiente nem no treino"),
                    "confirmed" if under["train_acc_pct"] < over["train_acc_pct"] - 5 else "contradicted",
                    pick(lang, "underfit: training ", "sub-ajuste: treino ")
                    + f"{pct(under['train_acc_pct'], lang)} " + pick(lang, "vs", "contra")
                    + f" {pct(over['train_acc_pct'], lang)}"))
    if over and reg and reg["gap"] is not None:
        better = reg["gap"] < over["gap"] and (reg["test_acc_pct"] or 0) > (over["test_acc_pct"] or 0)
        out.append((pick(lang, "A balance is needed: regularization narrows the gap",
                         "É preciso equilíbrio: a regularização reduz a diferença"),
                    "confirmed" if better else "qualified",
                    pick(lang, "gap ", "diferença ") + f"{fixed(over['gap'], lang)} → "
                                                       f"{fixed(reg['gap'], lang)}; "
                    + pick(lang, "test ", "teste ") + f"{fmt_outcome(over['outcome'], lang)} → "
                    f"{fmt_outcome(reg['outcome'], lang)}"))
    return out


def draw_curves(ax, items: list[tuple[str, dict]], lang: str) -> None:
    """Training (evaluated, solid, filled markers) and validation (dashed, hollow) per item."""
    for i, (label, v) in enumerate(items):
        look = style(i)
        if v["train_curve"]:
            ax.plot(*zip(*v["train_curve"]), label=pick(lang, f"{label}: training", f"{label}: treino"),
                    **{**look, "ls": "-", "markevery": max(1, len(v["train_curve"]) // 10)})
        if v["val_curve"]:
            ax.plot(*zip(*v["val_curve"]), label=pick(lang, f"{label}: validation", f"{label}: validação"),
                    **{**look, "ls": "--", "mfc": "none",
                       "markevery": max(1, len(v["val_curve"]) // 10)})
    ax.set(xlabel=pick(lang, "step", "passo"), ylabel=pick(lang, "accuracy (%)", "acurácia (%)"),
           title=pick(lang, "training (solid) vs validation (dashed)", "treino (contínua) vs "
                                                                       "validação (tracejada)"))
    legend(ax, lang, loc="lower right")


def draw_bars(ax, items: list[tuple[str, dict]], lang: str) -> None:
    xs = range(len(items))
    ax.bar([x - 0.2 for x in xs], [v["train_acc_pct"] or 0 for _, v in items], 0.4,
           label=pick(lang, "training (evaluated)", "treino (avaliado)"), color="C0")
    ax.bar([x + 0.2 for x in xs], [v["val_acc_pct"] or 0 for _, v in items], 0.4,
           label=pick(lang, "validation", "validação"), color="C1", hatch="//")
    for x, (_, v) in zip(xs, items):
        if v["gap"] is not None:
            ax.annotate(pick(lang, f"gap {fixed(v['gap'], lang)}", f"dif. {fixed(v['gap'], lang)}"),
                        (x, max(v["train_acc_pct"], v["val_acc_pct"]) + 1), ha="center", fontsize=8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([label for label, _ in items])
    ax.set(ylim=(0, 110), ylabel=pick(lang, "accuracy at the same step (%)", "acurácia no mesmo passo (%)"),
           title=pick(lang, "generalisation gap, like for like", "diferença treino − validação"))
    legend(ax, lang, loc="lower right")


def draw(n: dict, lang: str, path) -> None:
    fig, axes = panels(2, width=5.4)
    items = [(_name(a, lang), v) for a, v in n["arms"].items()]
    draw_curves(axes[0][0], items, lang)
    draw_bars(axes[0][1], items, lang)
    save(fig, path, lang)
