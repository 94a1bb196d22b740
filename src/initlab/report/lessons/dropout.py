"""Lesson 11: dropout in the overfit setting: the like-for-like gap, test accuracy, and how much
the network relies on its single most important hidden unit (unit ablation)."""

from __future__ import annotations

from initlab.report.collect import Run
from initlab.report.lessons.common import (
    by,
    fixed,
    fmt_outcome,
    integer,
    integer_axis,
    join,
    legend,
    num,
    panels,
    pct,
    pick,
    read_json,
    save,
    style,
)
from initlab.report.lessons.fitting import gap_numbers

TITLE = {"en": "Dropout", "pt-BR": "Abandono (dropout)"}
CLAIM = {"en": "Dropout removes random neurons during training, so the network does not rely on "
               "any one neuron; this helps against overfitting.",
         "pt-BR": "O abandono (dropout) remove neurônios aleatórios durante o treino, e assim a "
                  "rede não depende de nenhum neurônio isolado; isso ajuda contra o sobreajuste."}
TOP = 20  # units drawn in the ablation panel, most important first


def measure(runs: list[Run]) -> dict:
    table, shared = by(runs, "model.dropout")
    rates = {}
    for (p,), run in sorted(table.items()):
        ablation = read_json(run, "ablation.json") or {}
        drops = sorted(ablation.get("drop_points", []), reverse=True)
        rates[f"{p:g}"] = {**gap_numbers(run), "p": p,
                           "max_drop": ablation.get("max_drop_points"),
                           "mean_drop": ablation.get("mean_drop_points"),
                           "top_k": ablation.get("top_k"), "top_k_drop": ablation.get("top_k_drop_points"),
                           "units": ablation.get("units"), "silent_units": ablation.get("silent_units"),
                           "ablation_examples": ablation.get("examples"), "top_drops": drops[:TOP]}
    return {"rates": rates, "shared": shared}


def describe(n: dict, lang: str) -> list[str]:
    rates, out = n["rates"], []
    base = rates.get("0")
    others = [v for k, v in rates.items() if k != "0"]
    if base and others and base["gap"] is not None:
        narrower = [v for v in others if v["gap"] is not None and v["gap"] < base["gap"]]
        higher = [v for v in others if (v["test_acc_pct"] or 0) > (base["test_acc_pct"] or 0)]
        at = pick(lang, "at", "com")
        gaps = join([f"{fixed(v['gap'], lang)} {at} p={num(v['p'], lang)}" for v in others], lang)
        tests = join([f"{fmt_outcome(v['outcome'], lang)} {at} p={num(v['p'], lang)}" for v in others],
                     lang)
        everywhere = len(narrower) == len(others)
        narrows_en = ("narrows the gap at every rate tried" if everywhere
                      else "does not narrow the gap at every rate")
        narrows_pt = ("reduz a diferença em todas as taxas testadas" if everywhere
                      else "não reduz a diferença em todas as taxas")
        out.append(pick(lang, f"On {integer(base['train_samples'], lang)} training examples without "
                              f"dropout the CNN reaches {pct(base['train_acc_pct'], lang)} on its training "
                              f"data and {pct(base['val_acc_pct'], lang)} on validation (gap "
                              f"{fixed(base['gap'], lang)} points, both evaluated the same way). "
                              f"Dropout {narrows_en} ({gaps}) and test accuracy is higher than without it "
                              f"({fmt_outcome(base['outcome'], lang)}) at "
                              f"{len(higher)} of {len(others)} rates ({tests}).",
                        f"Com {integer(base['train_samples'], lang)} exemplos de treino e sem abandono, "
                        f"a CNN chega a {pct(base['train_acc_pct'], lang)} nos dados de treino e "
                        f"{pct(base['val_acc_pct'], lang)} na validação (diferença de "
                        f"{fixed(base['gap'], lang)} pontos, as duas medidas do mesmo jeito). O "
                        f"abandono {narrows_pt} ({gaps}) e a acurácia de teste fica acima da obtida sem ele "
                        f"({fmt_outcome(base['outcome'], lang)}) em {len(higher)} de {len(others)} "
                        f"taxas ({tests})."))
    if base and base["max_drop"] is not None and others:
        rel = [v for v in others if v["max_drop"] is not None]
        less = [v for v in rel if v["max_drop"] < base["max_drop"]]
        at = pick(lang, "at", "com")
        listing = join([f"{fixed(v['max_drop'], lang, 2)} {at} p={num(v['p'], lang)}" for v in rel], lang)
        topk = join([f"{fixed(v['top_k_drop'], lang, 2)} {at} p={num(v['p'], lang)}" for v in rel], lang)
        alone = base["max_drop"] < 1  # under a point: no single unit carries the network
        alone_en = (f" Even without dropout no single unit carries the network: its most important one "
                    f"is worth {fixed(base['max_drop'], lang, 2)} points." if alone else "")
        alone_pt = (f" Mesmo sem abandono nenhuma unidade sozinha sustenta a rede: a mais importante vale "
                    f"{fixed(base['max_drop'], lang, 2)} pontos." if alone else "")
        out.append(pick(lang, f"Removing the single most important of the {base['units']} hidden units "
                              f"(set to 0, on {integer(base['ablation_examples'], lang)} validation "
                              f"examples) costs {fixed(base['max_drop'], lang, 2)} points of accuracy "
                              f"without dropout and {listing}: "
                              + ("the network relies less on any one unit at every rate"
                                 if len(less) == len(rel) else
                                 f"it relies less on one unit at {len(less)} of {len(rel)} rates")
                              + f". Removing the {base['top_k']} most important together costs "
                                f"{fixed(base['top_k_drop'], lang, 2)} points without dropout and "
                                f"{topk}." + alone_en,
                        f"Remover a unidade oculta mais importante entre as {base['units']} (zerada, em "
                        f"{integer(base['ablation_examples'], lang)} exemplos de validação) custa "
                        f"{fixed(base['max_drop'], lang, 2)} pontos de acurácia sem abandono e {listing}: "
                        + ("a rede depende menos de uma unidade isolada em todas as taxas"
                           if len(less) == len(rel) else
                           f"ela depende menos de uma unidade isolada em {len(less)} de {len(rel)} taxas")
                        + f". Remover as {base['top_k']} mais importantes juntas custa "
                          f"{fixed(base['top_k_drop'], lang, 2)} pontos sem abandono e {topk}."
                        + alone_pt))
    return out


def table(n: dict, lang: str) -> list[str]:
    rows = [pick(lang, "| dropout | training accuracy (evaluated) | validation | gap (points) | test "
                       "| accuracy lost without the most important unit (points) | without the top 10 |",
                 "| abandono | acurácia de treino (avaliada) | validação | diferença (pontos) | teste "
                 "| acurácia perdida sem a unidade mais importante (pontos) | sem as 10 mais importantes |"),
            "|---|---|---|---|---|---|---|"]
    for v in n["rates"].values():
        rows.append(f"| {num(v['p'], lang)} | {pct(v['train_acc_pct'], lang)} "
                    f"| {pct(v['val_acc_pct'], lang)} "
                    f"| {fixed(v['gap'], lang)} | {fmt_outcome(v['outcome'], lang)} "
                    f"| {fixed(v['max_drop'], lang, 2)} | {fixed(v['top_k_drop'], lang, 2)} |")
    return rows


def verdicts(n: dict, lang: str) -> list[tuple[str, str, str]]:
    rates, out = n["rates"], []
    base = rates.get("0")
    others = [v for k, v in rates.items() if k != "0"]
    if not base or not others:
        return out
    if base["max_drop"] is not None:
        less = all(v["max_drop"] is not None and v["max_drop"] < base["max_drop"] for v in others)
        some = any(v["max_drop"] is not None and v["max_drop"] < base["max_drop"] for v in others)
        out.append((pick(lang, "With dropout the network does not rely on any one neuron",
                         "Com abandono a rede não depende de nenhum neurônio isolado"),
                    "confirmed" if less else "qualified" if some else "contradicted",
                    pick(lang, "accuracy lost without the top unit: ", "acurácia perdida sem a "
                                                                       "melhor unidade: ")
                    + "; ".join(f"p={num(v['p'], lang)} "
                                f"{fixed(v['max_drop'], lang, 2)}" for v in [base, *others])))
    if base["gap"] is not None:
        helps = all(v["gap"] is not None and v["gap"] < base["gap"]
                    and (v["test_acc_pct"] or 0) > (base["test_acc_pct"] or 0) for v in others)
        some = any((v["test_acc_pct"] or 0) > (base["test_acc_pct"] or 0) for v in others)
        out.append((pick(lang, "Dropout helps against overfitting", "O abandono ajuda contra o sobreajuste"),
                    "confirmed" if helps else "qualified" if some else "contradicted",
                    "; ".join(f"p={num(v['p'], lang)}: " + pick(lang, "gap ", "diferença ")
                              + f"{fixed(v['gap'], lang)}, " + pick(lang, "test ", "teste ")
                              + fmt_outcome(v["outcome"], lang) for v in [base, *others])))
    return out


def draw(n: dict, lang: str, path) -> None:
    fig, axes = panels(3, width=4.4)
    rates = list(n["rates"].values())
    labels = [num(v["p"], lang) for v in rates]
    ax = axes[0][0]
    ax.bar(labels, [v["gap"] or 0 for v in rates], color="C0")
    ax.set(xlabel=pick(lang, "dropout rate p", "taxa de abandono p"),
           ylabel=pick(lang, "training − validation (points)", "treino − validação (pontos)"),
           title=pick(lang, "generalisation gap, like for like", "diferença de generalização"))
    ax = axes[0][1]
    ax.plot(labels, [v["test_acc_pct"] for v in rates], marker="s", color="C1")
    ax.set(xlabel=pick(lang, "dropout rate p", "taxa de abandono p"),
           ylabel=pick(lang, "test accuracy (%)", "acurácia de teste (%)"),
           title=pick(lang, "test accuracy", "acurácia de teste"))
    ax = axes[0][2]
    for i, v in enumerate(rates):
        if v["top_drops"]:
            ax.plot(range(1, len(v["top_drops"]) + 1), v["top_drops"], label=f"p={num(v['p'], lang)}",
                    **style(i))
    ax.set(xlabel=pick(lang, "hidden unit, most important first", "unidade oculta, da mais importante"),
           ylabel=pick(lang, "accuracy lost when removed (points)", "acurácia perdida sem ela (pontos)"),
           title=pick(lang, "unit ablation", "remoção de unidades"))
    integer_axis(ax)
    legend(ax, lang)
    save(fig, path, lang)
