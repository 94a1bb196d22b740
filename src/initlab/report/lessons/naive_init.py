"""Lesson 2: naive draws U[-1, 1] and N(0, 1) against xavier, on tanh, sigmoid and ReLU."""

from __future__ import annotations

from initlab.report.collect import Run
from initlab.report.lessons.common import (
    by,
    fmt_outcome,
    init_layer_stat,
    integer_axis,
    join,
    legend,
    mean,
    note,
    num,
    ordered,
    outcome,
    panels,
    pct,
    pick,
    ratio,
    save,
    style,
)

TITLE = {"en": "Naive random draws", "pt-BR": "Sorteios ingênuos"}
CLAIM = {"en": "Uniform or normal draws from -1 to 1 also work badly: through the activation "
               "the values are distorted toward much larger ones.",
         "pt-BR": "Sortear os pesos de uma distribuição uniforme ou normal entre -1 e 1 também "
                  "funciona mal: ao passar pela ativação, os valores são distorcidos para "
                  "valores muito maiores."}
ACTS = ["tanh", "sigmoid", "relu"]
INITS = ["uniform", "normal", "xavier"]


def measure(runs: list[Run]) -> dict:
    table, shared = by(runs, "model.activation", "init.scheme")
    cells = {}
    for act in ordered((a for a, _ in table), ACTS):
        for init in ordered((i for _, i in table), INITS):
            run = table.get((act, init))
            if run is None:
                continue
            saturated = init_layer_stat(run, "activation_saturated")
            sat = [v for _, v in saturated]
            top_layer = saturated[-1][0] if saturated else None
            std = [v for _, v in init_layer_stat(run, "activation_std")]
            back = [v for _, v in init_layer_stat(run, "backprop_std")]
            depth = len(sat)
            top = [[s, 100 * v] for s, v in run.scalars(f"activation/{top_layer}/saturated")]
            stop = (run.result or {}).get("diverged_step")
            if stop is not None:  # probes after the loss stopped being finite measure a broken net
                top = [p for p in top if p[0] <= stop]
            top_mean = run.scalars(f"activation/{top_layer}/mean")
            cells[f"{act}/{init}"] = {
                "activation": act, "init": init, "depth": depth, "top_layer": top_layer,
                "saturated_init": [100 * v for v in sat], "std_init": std,
                "saturated_mean_init": mean(100 * v for v in sat),
                "std_last_init": std[-1] if std else None,
                "backprop_first_over_last": ratio(back[0], back[-1]) if back else None,
                "top_saturated_curve": top,
                "top_saturated_max": max((v for _, v in top), default=None),
                "top_saturated_max_step": max(top, key=lambda p: p[1])[0] if top else None,
                "top_mean_last": top_mean[-1][1] if top_mean else None,
                "outcome": outcome(run), "test_acc_pct": outcome(run)["test_acc_pct"]}
    return {"cells": cells, "shared": shared}


def _acc(cell: dict | None) -> float:
    return -1.0 if cell is None or cell["test_acc_pct"] is None else cell["test_acc_pct"]


def describe(n: dict, lang: str) -> list[str]:
    cells = n["cells"]
    out = []
    for act in ordered({c["activation"] for c in cells.values()}, ACTS):
        naive = [cells[f"{act}/{i}"] for i in ("uniform", "normal") if f"{act}/{i}" in cells]
        xav = cells.get(f"{act}/xavier")
        if not naive or xav is None:
            continue
        word = pick(lang, "dead", "mortas") if act == "relu" else pick(lang, "saturated", "saturadas")
        sats = join([pct(c["saturated_mean_init"], lang, 0) for c in naive], lang)
        stds = join([num(c["std_last_init"], lang) for c in naive], lang)
        more = all(c["saturated_mean_init"] > xav["saturated_mean_init"] + 5 for c in naive)
        larger = all(c["std_last_init"] > 2 * xav["std_last_init"] for c in naive)
        sat_part = pick(lang, f"{sats} of the hidden units start {word} under U[-1, 1] and N(0, 1), "
                              f"{'far more than' if more else 'about as many as'} under xavier "
                              f"({pct(xav['saturated_mean_init'], lang, 0)})",
                        f"{sats} das unidades ocultas começam {word} com U[-1, 1] e N(0, 1), "
                        f"{'muito mais que' if more else 'quase tantas quanto'} com xavier "
                        f"({pct(xav['saturated_mean_init'], lang, 0)})")
        std_part = pick(lang, f"the last hidden layer's activation std is {stds}, "
                              f"{'much larger than' if larger else 'close to'} xavier's "
                              f"{num(xav['std_last_init'], lang)}",
                        f"o desvio padrão das ativações da última camada oculta é {stds}, "
                        f"{'muito maior que' if larger else 'próximo de'} "
                        f"{num(xav['std_last_init'], lang)} com xavier")
        results = join([f"{c['init']} {fmt_outcome(c['outcome'], lang)}" for c in [*naive, xav]], lang)
        better = all(_acc(xav) > _acc(c) for c in naive)
        verdict = pick(lang, "xavier trains best" if better else "xavier does not train best",
                       "xavier treina melhor" if better else "xavier não é a que treina melhor")
        out.append(pick(lang, f"{act.capitalize()}: {sat_part}, and {std_part}; after training "
                              f"{results}: {verdict}.",
                        f"{act.capitalize().replace('Sigmoid', 'Sigmoide')}: {sat_part}, e {std_part}; "
                        f"depois do treino, {results}: {verdict}."))
        if not better:
            out.append(_explain(xav, naive, lang))
    return out


def _explain(xav: dict, naive: list[dict], lang: str) -> str:
    """Why xavier lost here, from the run's own measurements: the top layer's saturation during
    training and the gradient reaching the first layer at init."""
    start = xav["saturated_init"][-1] if xav["saturated_init"] else None
    peak, step = xav["top_saturated_max"], xav["top_saturated_max_step"]
    grad = xav["backprop_first_over_last"]
    grads_naive = [c["backprop_first_over_last"] for c in naive]
    saturates = peak is not None and start is not None and peak > start + 20
    weaker = all(g is not None and grad is not None and grad < g for g in grads_naive)
    act = "sigmoid" if xav["activation"] == "sigmoid" else xav["activation"]
    parts = []
    if peak is not None and saturates:
        parts.append(pick(lang,
                          f"its top hidden layer ({xav['top_layer']}) goes from {pct(start, lang)} "
                          f"saturated at init to {pct(peak, lang)} at step {step}, the saturation "
                          f"of Glorot & Bengio's Fig. 2",
                          f"a última camada oculta ({xav['top_layer']}) passa de {pct(start, lang)} "
                          f"de unidades saturadas no início para {pct(peak, lang)} no passo {step}, "
                          f"a saturação da Fig. 2 de Glorot e Bengio"))
    elif peak is not None and peak < 0.05:
        parts.append(pick(lang,
                          f"none of the units of its top hidden layer ({xav['top_layer']}) saturates "
                          f"during training and their mean activation ends at "
                          f"{num(xav['top_mean_last'], lang, 2)}: the saturation of Glorot & Bengio's "
                          f"Fig. 2 does not happen here",
                          f"nenhuma unidade da última camada oculta ({xav['top_layer']}) satura durante "
                          f"o treino, e a ativação média termina em {num(xav['top_mean_last'], lang, 2)}: "
                          f"a saturação da Fig. 2 de Glorot e Bengio não acontece aqui"))
    elif peak is not None:
        parts.append(pick(lang,
                          f"its top hidden layer ({xav['top_layer']}) never has more than "
                          f"{pct(peak, lang)} of its units saturated during training and its mean "
                          f"activation ends at {num(xav['top_mean_last'], lang, 2)}: the saturation "
                          f"of Glorot & Bengio's Fig. 2 does not happen here",
                          f"a última camada oculta ({xav['top_layer']}) nunca tem mais de "
                          f"{pct(peak, lang)} das unidades saturadas durante o treino, e a ativação "
                          f"média termina em {num(xav['top_mean_last'], lang, 2)}: a saturação da "
                          f"Fig. 2 de Glorot e Bengio não acontece aqui"))
    if grad is not None:
        parts.append(pick(lang,
                          f"at init the first layer receives {num(grad, lang, 2)} of the last hidden "
                          f"layer's back-propagated gradient std, "
                          f"{'less than' if weaker else 'not less than'} under the naive draws "
                          f"({join([num(g, lang, 2) for g in grads_naive], lang)})",
                          f"no início, a primeira camada recebe {num(grad, lang, 2)} do desvio padrão "
                          f"do gradiente retropropagado da última camada oculta, "
                          f"{'menos que' if weaker else 'não menos que'} com os sorteios ingênuos "
                          f"({join([num(g, lang, 2) for g in grads_naive], lang)})"))
    cause = pick(lang,
                 "The run's own numbers point to " + ("both" if saturates and weaker else
                                                      "the saturation" if saturates else
                                                      "the vanishing gradient" if weaker else
                                                      "neither") + ": ",
                 "Os números da própria execução apontam para " + (
                     "as duas coisas" if saturates and weaker else "a saturação" if saturates
                     else "o gradiente que desaparece" if weaker else "nenhuma das duas") + ": ")
    worst = all(_acc(xav) < _acc(c) for c in naive)
    pt_act = act.replace("sigmoid", "sigmoide")
    name = pick(lang, f"Why does the {act} network train {'worst' if worst else 'no better'} under "
                      f"xavier here?",
                f"Por que a rede {pt_act} treina {'pior' if worst else 'sem vantagem'} com xavier aqui?")
    return f"{name} {cause}{'; '.join(parts)}."


def table(n: dict, lang: str) -> list[str]:
    rows = [pick(lang, "| activation | init | saturated (ReLU: dead) at init, mean of hidden layers "
                       "| activation std, last hidden layer, at init | top hidden layer saturated, "
                       "highest in training | gradient std first/last hidden at init | after training |",
                 "| ativação | inicialização | saturadas (ReLU: mortas) no início, média das camadas "
                 "ocultas | desvio padrão das ativações, última camada oculta, no início "
                 "| última camada oculta saturada, máximo no treino | desvio do gradiente "
                 "primeira/última oculta no início | após o treino |"),
            "|---|---|---|---|---|---|---|"]
    for c in n["cells"].values():
        act = c["activation"] if lang == "en" else c["activation"].replace("sigmoid", "sigmoide")
        rows.append(f"| {act} | {c['init']} | {pct(c['saturated_mean_init'], lang)} "
                    f"| {num(c['std_last_init'], lang)} | {pct(c['top_saturated_max'], lang)} "
                    f"| {num(c['backprop_first_over_last'], lang)} | {fmt_outcome(c['outcome'], lang)} |")
    return rows


def verdicts(n: dict, lang: str) -> list[tuple[str, str, str]]:
    cells = n["cells"]
    wins, losses, numbers = [], [], []
    for act in ordered({c["activation"] for c in cells.values()}, ACTS):
        xav = cells.get(f"{act}/xavier")
        naive = [cells[f"{act}/{i}"] for i in ("uniform", "normal") if f"{act}/{i}" in cells]
        if xav is None or not naive:
            continue
        (wins if all(_acc(xav) > _acc(c) for c in naive) else losses).append(act)
        name = act if lang == "en" else act.replace("sigmoid", "sigmoide")
        numbers.append(f"{name}: " + " / ".join(fmt_outcome(c["outcome"], lang) for c in naive)
                       + pick(lang, " vs xavier ", " contra xavier ") + fmt_outcome(xav["outcome"], lang))
    if not numbers:
        return []
    verdict = "confirmed" if not losses else "qualified" if wins else "contradicted"
    return [(CLAIM[lang], verdict, "; ".join(numbers))]


def draw(n: dict, lang: str, path) -> None:
    cells = n["cells"]
    acts = ordered({c["activation"] for c in cells.values()}, ACTS)
    fig, axes = panels(len(acts), rows=3, height=3.2)
    for col, act in enumerate(acts):
        name = act if lang == "en" else act.replace("sigmoid", "sigmoide")
        dead = act == "relu"
        mine = [c for c in cells.values() if c["activation"] == act]
        for i, c in enumerate(mine):
            layers = range(1, len(c["saturated_init"]) + 1)
            axes[0][col].plot(layers, c["saturated_init"], label=c["init"], **style(i, i != 2))
            axes[1][col].plot(layers, c["std_init"], label=c["init"], **style(i, i != 2))
            if c["top_saturated_curve"]:
                axes[2][col].plot(*zip(*c["top_saturated_curve"]), label=c["init"], **style(i, i != 2))
        sat_word = pick(lang, "dead" if dead else "saturated", "mortas" if dead else "saturadas")
        axes[0][col].set(title=pick(lang, f"{name}: % {sat_word} at init", f"{name}: % {sat_word} no início"),
                         xlabel=pick(lang, "hidden layer", "camada oculta"),
                         ylabel=pick(lang, f"% of units {sat_word}", f"% de unidades {sat_word}"),
                         ylim=(-3, 103))
        axes[1][col].set(title=pick(lang, f"{name}: activation std at init",
                                    f"{name}: desvio padrão das ativações"),
                         xlabel=pick(lang, "hidden layer", "camada oculta"), yscale="log",
                         ylabel=pick(lang, "std (log scale)", "desvio padrão (escala log)"))
        top = mine[0]["top_layer"] if mine else "?"
        axes[2][col].set(title=pick(lang, f"{name}: top layer {top} during training",
                                    f"{name}: última camada {top} no treino"),
                         xlabel=pick(lang, "step", "passo"),
                         ylabel=pick(lang, f"% of units {sat_word}", f"% de unidades {sat_word}"),
                         ylim=(-3, 103))
        for row in range(2):
            integer_axis(axes[row][col])
        integer_axis(axes[2][col])
        close = [c["init"] for c in mine if any(
            o is not c and max(abs(a - b) for a, b in zip(c["saturated_init"], o["saturated_init"])) < 3
            for o in mine)]
        if len(close) > 1:
            note(axes[0][col], pick(lang, f"{', '.join(close)}: lines coincide",
                                    f"{', '.join(close)}: linhas coincidem"))
        for row in range(3):
            legend(axes[row][col], lang)
    save(fig, path, lang)


