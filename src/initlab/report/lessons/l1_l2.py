"""Lesson 10: L1 and L2 penalties: near-zero weights, the weight norm, accuracy."""

from __future__ import annotations

import math

from initlab.report.collect import Run
from initlab.report.lessons.common import (
    by,
    fixed,
    fmt_outcome,
    legend,
    note,
    num,
    outcome,
    panels,
    pct,
    pick,
    read_json,
    save,
    style,
)

TITLE = {"en": "L1 and L2 penalties", "pt-BR": "Regularização L1 e L2"}
CLAIM = {"en": "L1 and L2 regularization add a penalty for large weights, so that no single "
               "feature carries a large weight.",
         "pt-BR": "A regularização L1 e L2 acrescenta uma penalidade para pesos grandes, para que "
                  "nenhuma característica isolada tenha um peso grande."}


def weight_totals(run: Run) -> dict:
    summary = read_json(run, "weights.json")
    if summary is None:
        return {}
    layers = (run.init_stats or {}).get("layers", {})
    # units (output features or channels) x fan_in (inputs per unit) = the weight's size
    numel = {n: s["units"] * layers[n]["fan_in"] for n, s in summary["layers"].items()
             if "fan_in" in layers.get(n, {})}
    near = sum(s["near_zero_fraction"] * numel.get(n, 0) for n, s in summary["layers"].items())
    count = sum(numel.get(n, 0) for n in summary["layers"])
    return {"near_zero": 100 * near / count if count else None,
            "weight_l2": math.sqrt(sum(s["weight_l2"] ** 2 for s in summary["layers"].values())),
            "threshold": summary.get("near_zero_threshold")}


def measure(runs: list[Run]) -> dict:
    table, shared = by(runs, "l1", "l2")
    cells = {f"l1={l1:g},l2={l2:g}": {"l1": l1, "l2": l2, **weight_totals(run), "outcome": outcome(run),
                                      "test_acc_pct": outcome(run)["test_acc_pct"]}
             for (l1, l2), run in sorted(table.items())}
    threshold = next((c["threshold"] for c in cells.values() if c.get("threshold")), None)
    return {"cells": cells, "threshold": threshold, "shared": shared}


def _only(n: dict, penalty: str) -> list[dict]:
    other = "l2" if penalty == "l1" else "l1"
    return sorted((c for c in n["cells"].values() if c[other] == 0 and c.get("near_zero") is not None),
                  key=lambda c: c[penalty])


def describe(n: dict, lang: str) -> list[str]:
    out = []
    l1s, l2s = _only(n, "l1"), _only(n, "l2")
    if len(l1s) < 2 or len(l2s) < 2:
        return out
    none, l1, l2 = l1s[0], l1s[-1], l2s[-1]
    thr = num(n["threshold"], lang)
    for c, name in ((l1, "L1"), (l2, "L2")):
        coef = c["l1"] if name == "L1" else c["l2"]
        sparser = c["near_zero"] > none["near_zero"] + 5
        smaller = c["weight_l2"] < none["weight_l2"]
        diff = (c["test_acc_pct"] or 0) - (none["test_acc_pct"] or 0)
        out.append(pick(lang,
                        f"{name} at {num(coef, lang)}: {pct(c['near_zero'], lang)} of the weights end "
                        f"below {thr} in magnitude ({pct(none['near_zero'], lang)} without a penalty: "
                        f"{'far more' if sparser else 'about as many'}), the weight norm "
                        f"{'falls' if smaller else 'rises'} from {num(none['weight_l2'], lang)} to "
                        f"{num(c['weight_l2'], lang)}, and test accuracy "
                        f"{'rises' if diff > 0 else 'falls'} by {fixed(abs(diff), lang)} points "
                        f"({fmt_outcome(none['outcome'], lang)} → {fmt_outcome(c['outcome'], lang)}).",
                        f"{name} com {num(coef, lang)}: {pct(c['near_zero'], lang)} dos pesos terminam "
                        f"abaixo de {thr} em módulo ({pct(none['near_zero'], lang)} sem penalidade: "
                        f"{'muito mais' if sparser else 'quase a mesma quantidade'}), a norma dos pesos "
                        f"{'cai' if smaller else 'sobe'} de {num(none['weight_l2'], lang)} para "
                        f"{num(c['weight_l2'], lang)}, e a acurácia de teste "
                        f"{'sobe' if diff > 0 else 'cai'} {fixed(abs(diff), lang)} pontos "
                        f"({fmt_outcome(none['outcome'], lang)} → {fmt_outcome(c['outcome'], lang)})."))
    if l1["l1"] == l2["l2"]:
        zeroes = l1["near_zero"] > l2["near_zero"]
        out.append(pick(lang,
                        f"At the same coefficient L1 {'zeroes' if zeroes else 'does not zero'} more weights "
                        f"than L2 ({pct(l1['near_zero'], lang)} against {pct(l2['near_zero'], lang)}): L2 "
                        f"shrinks every weight in proportion, L1 pushes each by the same amount toward "
                        f"0. The weights L1 presses down are small, not exactly 0 (gradient steps do not "
                        f"land on 0), so the count uses the threshold {thr}.",
                        f"Com o mesmo coeficiente, a L1 {'zera' if zeroes else 'não zera'} mais pesos que "
                        f"a L2 ({pct(l1['near_zero'], lang)} contra {pct(l2['near_zero'], lang)}): a L2 "
                        f"encolhe cada peso em proporção, a L1 empurra cada um pela mesma quantidade em "
                        f"direção a 0. Os pesos que a L1 empurra ficam pequenos, não exatamente 0 (os "
                        f"passos de gradiente não caem em 0), por isso a contagem usa o limiar {thr}."))
    return out


def table(n: dict, lang: str) -> list[str]:
    thr = num(n["threshold"], lang)
    rows = [pick(lang, f"| l1 | l2 | weights with \\|w\\| < {thr} | ‖W‖₂ (all layers) | test accuracy |",
                 f"| l1 | l2 | pesos com \\|w\\| < {thr} | ‖W‖₂ (todas as camadas) | acurácia de teste |"),
            "|---|---|---|---|---|"]
    for c in n["cells"].values():
        rows.append(f"| {num(c['l1'], lang)} | {num(c['l2'], lang)} | {pct(c.get('near_zero'), lang)} "
                    f"| {num(c.get('weight_l2'), lang)} | {fmt_outcome(c['outcome'], lang)} |")
    return rows


def verdicts(n: dict, lang: str) -> list[tuple[str, str, str]]:
    l1s, l2s = _only(n, "l1"), _only(n, "l2")
    if len(l1s) < 2 or len(l2s) < 2:
        return []
    none, l1, l2 = l1s[0], l1s[-1], l2s[-1]
    both = l1["weight_l2"] < none["weight_l2"] and l2["weight_l2"] < none["weight_l2"]
    return [(CLAIM[lang], "confirmed" if both else "qualified",
             f"‖W‖₂: {num(none['weight_l2'], lang)} " + pick(lang, "without, ", "sem, ")
             + f"{num(l1['weight_l2'], lang)} (L1 {num(l1['l1'], lang)}), {num(l2['weight_l2'], lang)} "
               f"(L2 {num(l2['l2'], lang)})")]


def draw(n: dict, lang: str, path) -> None:
    fig, axes = panels(3, width=4.4)
    coef = pick(lang, "penalty coefficient", "coeficiente da penalidade")
    for i, penalty in enumerate(("l1", "l2")):
        cells = _only(n, penalty)
        if not cells:
            continue
        labels = [num(c[penalty], lang) for c in cells]
        name = pick(lang, f"{penalty.upper()} only", f"só {penalty.upper()}")
        axes[0][0].plot(labels, [c["near_zero"] for c in cells], label=name, **style(i))
        axes[0][1].plot(labels, [c["weight_l2"] for c in cells], label=name, **style(i))
        axes[0][2].plot(labels, [c["test_acc_pct"] for c in cells], label=name, **style(i))
    thr = num(n["threshold"], lang)
    axes[0][0].set(xlabel=coef, ylabel=pick(lang, f"% of weights with |w| < {thr}", f"% dos pesos "
                                                                                    f"com |w| < {thr}"),
                   title=pick(lang, "near-zero weights", "pesos quase nulos"))
    axes[0][1].set(xlabel=coef, ylabel="‖W‖₂", title=pick(lang, "weight norm", "norma dos pesos"))
    axes[0][2].set(xlabel=coef, ylabel=pick(lang, "test accuracy (%)", "acurácia de teste (%)"),
                   title=pick(lang, "accuracy", "acurácia"))
    for ax in axes[0]:
        legend(ax, lang)
    # both lines start at the one run without a penalty
    note(axes[0][1], pick(lang, "at 0 both lines are the same run",
                          "em 0 as duas linhas são a mesma execução"), y=0.1)
    save(fig, path, lang)
