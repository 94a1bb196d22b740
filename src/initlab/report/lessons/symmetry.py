"""Lesson 1: zero (or constant) initialization keeps the units of a layer identical."""

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
    note,
    ordered,
    outcome,
    panels,
    pick,
    read_json,
    save,
    split_layers,
    style,
)

TITLE = {"en": "Zero initialization and symmetry", "pt-BR": "Inicialização com zeros e simetria"}
CLAIM = {"en": "Zero initialization fails: with no randomness the units of a layer stay "
               "identical; training needs a random start.",
         "pt-BR": "Inicializar os pesos com zero não funciona: sem aleatoriedade, as unidades de "
                  "uma camada continuam idênticas; o treino precisa de um início aleatório."}
ORDER = ["zeros", "constant", "xavier"]


def measure(runs: list[Run]) -> dict:
    table, shared = by(runs, "init.scheme")
    inits = {}
    steps = None
    for (init,) in ((i,) for i in ordered((k for k, in table), ORDER)):
        run = table[(init,)]
        summary = read_json(run, "weights.json")
        if summary is None:
            continue
        layers, _ = split_layers(summary["layers"])
        steps = summary["step"]
        inits[init] = {"distinct_units": [summary["layers"][n]["distinct_units"] for n in layers],
                       "units": summary["layers"][layers[0]]["units"], "outcome": outcome(run),
                       "test_acc_pct": outcome(run)["test_acc_pct"]}
    return {"inits": inits, "steps": steps, "shared": shared}


def _random(n: dict) -> list[str]:
    """Inits whose units all stayed distinct (symmetry broken)."""
    return [i for i, v in n["inits"].items() if min(v["distinct_units"]) == v["units"]]


def _collapsed(n: dict) -> list[str]:
    return [i for i, v in n["inits"].items() if max(v["distinct_units"]) == 1]


def describe(n: dict, lang: str) -> list[str]:
    inits = n["inits"]
    if not inits:
        return [pick(lang, "No run wrote weights.json yet.", "Nenhuma execução gravou weights.json ainda.")]
    out = []
    collapsed = _collapsed(n)
    if len(collapsed) > 1:  # one sentence for the inits that end alike
        units = integer(inits[collapsed[0]]["units"], lang)
        names = join([f"`init={i}`" for i in collapsed], lang)
        out.append(pick(lang, f"Under {names} alike, every hidden layer ends training with a single "
                              f"distinct unit out of {units}: the layer is one unit copied {units} times.",
                        f"Tanto com {names.replace(' e ', ' quanto com ')}, cada camada oculta termina "
                        f"o treino com uma única unidade distinta entre {units}: a camada é uma só "
                        f"unidade copiada {units} vezes."))
    for init, v in inits.items():
        if len(collapsed) > 1 and init in collapsed:
            continue
        units = integer(v["units"], lang)
        lo, hi = min(v["distinct_units"]), max(v["distinct_units"])
        if hi == 1:
            out.append(pick(lang, f"Under `init={init}` every hidden layer ends training with a "
                                  f"single distinct unit out of {units}: the layer is one unit "
                                  f"copied {units} times.",
                            f"Com `init={init}`, cada camada oculta termina o treino com uma "
                            f"única unidade distinta entre {units}: a camada é uma só unidade "
                            f"copiada {units} vezes."))
        elif lo == v["units"]:
            out.append(pick(lang, f"Under `init={init}` all {units} units of every hidden layer "
                                  f"stay distinct.",
                            f"Com `init={init}`, as {units} unidades de cada camada oculta "
                            f"continuam todas distintas."))
        else:
            out.append(pick(lang, f"Under `init={init}` the hidden layers keep {lo} to {hi} "
                                  f"distinct units out of {units}.",
                            f"Com `init={init}`, as camadas ocultas mantêm de {lo} a {hi} "
                            f"unidades distintas entre {units}."))
    accs = {i: v["test_acc_pct"] for i, v in inits.items() if v["test_acc_pct"] is not None}
    if len(accs) >= 2:
        best = max(accs, key=accs.get)
        others = [i for i in accs if i != best]
        gap = accs[best] - max(accs[i] for i in others)
        parts = join([f"`{i}` {fmt_outcome(inits[i]['outcome'], lang)}" for i in others], lang)
        out.append(pick(lang, f"After {n['steps']} SGD steps `{best}` reaches the highest test "
                              f"accuracy, {fmt_outcome(inits[best]['outcome'], lang)}, "
                              f"{fixed(gap, lang)} points above the next ({parts}).",
                        f"Depois de {n['steps']} passos de SGD, `{best}` chega à maior acurácia "
                        f"de teste, {fmt_outcome(inits[best]['outcome'], lang)}, "
                        f"{fixed(gap, lang)} pontos acima da seguinte ({parts})."))
    return out


def table(n: dict, lang: str) -> list[str]:
    head = pick(lang, "| init | distinct units per hidden layer | of | test accuracy |",
                "| inicialização | unidades distintas por camada oculta | de | acurácia de teste |")
    rows = [head, "|---|---|---|---|"]
    for init, v in n["inits"].items():
        rows.append(f"| {init} | {' / '.join(map(str, v['distinct_units']))} | "
                    f"{integer(v['units'], lang)} | {fmt_outcome(v['outcome'], lang)} |")
    return rows


def verdicts(n: dict, lang: str) -> list[tuple[str, str, str]]:
    inits = n["inits"]
    zeros = inits.get("zeros")
    randoms = [i for i in _random(n) if inits[i]["test_acc_pct"] is not None]
    if zeros is None or not randoms:
        return []
    best = max(randoms, key=lambda i: inits[i]["test_acc_pct"])
    identical = max(zeros["distinct_units"]) == 1
    worse = zeros["test_acc_pct"] is None or zeros["test_acc_pct"] < inits[best]["test_acc_pct"] - 10
    verdict = "confirmed" if identical and worse else "qualified" if identical or worse \
        else "contradicted"
    k = max(zeros["distinct_units"])
    number = pick(lang, f"zeros: {k} distinct unit{'s' if k > 1 else ''} of "
                        f"{zeros['units']} per layer, {fmt_outcome(zeros['outcome'], lang)}; "
                        f"{best}: {fmt_outcome(inits[best]['outcome'], lang)}",
                  f"zeros: {k} unidade{'s distintas' if k > 1 else ' distinta'} de "
                  f"{integer(zeros['units'], lang)} por camada, {fmt_outcome(zeros['outcome'], lang)}; "
                  f"{best}: {fmt_outcome(inits[best]['outcome'], lang)}")
    return [(CLAIM[lang], verdict, number)]


def draw(n: dict, lang: str, path) -> None:
    fig, axes = panels(2)
    ax = axes[0][0]
    for i, (init, v) in enumerate(n["inits"].items()):
        layers = range(1, len(v["distinct_units"]) + 1)
        ax.plot(layers, v["distinct_units"], label=init, **style(i, filled=i != 0))
    ax.set(yscale="log", xlabel=pick(lang, "hidden layer", "camada oculta"),
           ylabel=pick(lang, "distinct units after training", "unidades distintas após o treino"),
           title=pick(lang, "units whose incoming weights differ",
                      "unidades com pesos de entrada diferentes"))
    integer_axis(ax)
    collapsed = _collapsed(n)
    if len(collapsed) > 1:
        note(ax, pick(lang, f"{' and '.join(collapsed)} coincide: 1 unit",
                      f"{' e '.join(collapsed)} coincidem: 1 unidade"))
    legend(ax, lang, loc="center right")
    ax = axes[0][1]
    names = list(n["inits"])
    accs = [n["inits"][i]["test_acc_pct"] or 0 for i in names]
    bars = ax.bar(names, accs, color=[f"C{i}" for i in range(len(names))])
    for bar, init in zip(bars, names):
        ax.annotate(fmt_outcome(n["inits"][init]["outcome"], lang), (bar.get_x() + bar.get_width() / 2,
                    bar.get_height()), ha="center", va="bottom", fontsize=8)
    ax.set(ylim=(0, 105), ylabel=pick(lang, "test accuracy (%)", "acurácia de teste (%)"),
           title=pick(lang, "accuracy after training", "acurácia após o treino"))
    save(fig, path, lang)
