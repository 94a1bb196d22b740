"""Lesson 3: Var(W) = 1/n_in (lecun), 2/(n_in + n_out) (xavier), 2/n_in (he); the derivation
Var(Y) = n Var(W) Var(X) measured on a linear network, and unequal widths."""

from __future__ import annotations

import math

from initlab.report.collect import Run
from initlab.report.lessons.common import (
    by,
    choice,
    fmt_outcome,
    init_layer_stat,
    integer_axis,
    join,
    legend,
    note,
    num,
    outcome,
    panels,
    pick,
    save,
    split_layers,
    style,
)

TITLE = {"en": "Xavier and its variants", "pt-BR": "Xavier e suas variações"}
CLAIM = {"en": "Xavier/Glorot: Var(W) = 1/n, derived from Var(Y) = n Var(W) Var(X); the paper "
               "recommends 2/(n_in + n_out); He's 2/n_in is another variation.",
         "pt-BR": "Inicialização de Xavier/Glorot: Var(W) = 1/n, deduzida de Var(Y) = n Var(W) "
                  "Var(X); o artigo recomenda 2/(n_in + n_out); a de He, 2/n_in, é outra variação."}
FORMULA = {"lecun": "1/n_in", "xavier": "2/(n_in+n_out)", "he": "2/n_in"}
INITS = ["lecun", "xavier", "he"]
ACTS = ["tanh", "relu", "linear"]
TANH_GAIN = 5 / 3  # torch.nn.init.calculate_gain("tanh")


def measure(runs: list[Run]) -> dict:
    table, shared = by(runs, "arm/xavier_variants", "model.activation", "init.scheme")
    cells = {}
    for (arm, act, init), run in table.items():
        layers = (run.init_stats or {}).get("layers", {})
        hidden, output = split_layers(layers)
        fwd = [v for _, v in init_layer_stat(run, "activation_std")]
        back = [v for _, v in init_layer_stat(run, "backprop_std")]
        cell = {"arm": arm or "equal", "activation": act, "init": init,
                "widths": [layers[n]["fan_out"] for n in hidden],
                "std": fwd, "backprop": back,
                "fan_in_var": [layers[n]["fan_in_var"] for n in hidden],
                "fan_out_var": [layers[n]["fan_out_var"] for n in [*hidden[1:], output] if n in layers],
                "outcome": outcome(run), "test_acc_pct": outcome(run)["test_acc_pct"],
                "steps": (run.result or {}).get("steps"), "depth": choice(run, "model.depth")}
        # the derivation on each layer after the first (its input is the previous layer's
        # zero-mean output): Var(Y)/Var(X) forward against n_in Var(W), and the gradient's
        # Var(dC/dx)/Var(dC/dy) backward against n_out Var(W) of the layer above
        cell["forward_ratio"] = [(fwd[k] / fwd[k - 1]) ** 2 for k in range(1, len(fwd))]
        cell["forward_predicted"] = cell["fan_in_var"][1:len(fwd)]
        cell["backward_ratio"] = [(back[k] / back[k + 1]) ** 2 for k in range(len(back) - 1)]
        cell["backward_predicted"] = cell["fan_out_var"][:len(back) - 1]
        cell["forward_total"] = (fwd[-1] / fwd[0]) ** 2 if fwd else None  # Var, last / first hidden
        cell["backward_total"] = (back[0] / back[-1]) ** 2 if back else None  # Var, first / last
        cells[f"{cell['arm']}/{act}/{init}"] = cell
    return {"cells": cells, "shared": shared}


def _get(n, arm, act, init):
    return n["cells"].get(f"{arm}/{act}/{init}")


def _worst_error(cell: dict, kind: str) -> float | None:
    """The largest relative departure of a measured ratio from its prediction, over layers."""
    pairs = list(zip(cell[f"{kind}_ratio"], cell[f"{kind}_predicted"]))
    return max((abs(m / p - 1) for m, p in pairs if p), default=None)


def _off(value: float | None) -> float:
    """How far a variance ratio is from 1, in factors (2 and 0.5 are equally far)."""
    return abs(math.log(value)) if value else math.inf


def describe(n: dict, lang: str) -> list[str]:
    out = []
    lins = [c for c in (_get(n, "equal", "linear", i) for i in INITS) if c and c["forward_ratio"]]
    if lins:
        parts = []
        for c in lins:
            lo, hi = min(c["forward_ratio"]), max(c["forward_ratio"])
            pred = sum(c["forward_predicted"]) / len(c["forward_predicted"])
            parts.append(pick(lang, f"{num(lo, lang, 2)} to {num(hi, lang, 2)} under {c['init']} "
                                    f"(n_in Var(W) = {num(pred, lang, 2)})",
                              f"entre {num(lo, lang, 2)} e {num(hi, lang, 2)} com {c['init']} "
                              f"(n_in Var(W) = {num(pred, lang, 2)})"))
        worst = max(_worst_error(c, "forward") for c in lins)
        holds = worst < 0.15
        out.append(pick(lang,
                        f"On the linear network (no activation, {len(lins[0]['std'])} layers of "
                        f"{lins[0]['widths'][0]}) the measured Var(Y)/Var(X) of layers 2 to "
                        f"{len(lins[0]['std'])} is {join(parts, lang)}: the derivation "
                        + ("holds" if holds else "does not hold")
                        + f", every layer within {num(100 * worst, lang, 2)}% of n_in Var(W).",
                        f"Na rede linear (sem ativação, {len(lins[0]['std'])} camadas de "
                        f"{lins[0]['widths'][0]}), a razão medida Var(Y)/Var(X) das camadas 2 a "
                        f"{len(lins[0]['std'])} fica {join(parts, lang)}: a dedução "
                        + ("se confirma" if holds else "não se confirma")
                        + f", com cada camada a menos de {num(100 * worst, lang, 2)}% de n_in Var(W)."))
    lecun, xav = _get(n, "funnel", "linear", "lecun"), _get(n, "funnel", "linear", "xavier")
    if lecun and xav and lecun["forward_total"] and xav["forward_total"]:
        worst_l = max(_off(lecun["forward_total"]), _off(lecun["backward_total"]))
        worst_x = max(_off(xav["forward_total"]), _off(xav["backward_total"]))
        balances = worst_x < worst_l
        keeps = _off(lecun["forward_total"]) < math.log(1.5)
        widths = "-".join(str(w) for w in lecun["widths"])
        out.append(pick(lang,
                        f"With unequal widths ({widths}, linear), 1/n_in "
                        f"{'keeps' if keeps else 'does not keep'} the forward variance "
                        f"(last/first hidden layer {num(lecun['forward_total'], lang, 2)}) while the "
                        f"back-propagated gradient's variance changes by "
                        f"{num(lecun['backward_total'], lang, 2)} from the last hidden layer to "
                        f"the first; 2/(n_in + n_out) gives {num(xav['forward_total'], lang, 2)} "
                        f"and {num(xav['backward_total'], lang, 2)}: "
                        + ("it balances the two directions, neither exact, both closer to 1 than "
                           "1/n_in's worse one" if balances else
                           "it does not bring the worse direction closer to 1 than 1/n_in does")
                        + ".",
                        f"Com larguras desiguais ({widths}, rede linear), 1/n_in "
                        f"{'mantém' if keeps else 'não mantém'} a variância "
                        f"no sentido direto (última/primeira camada oculta "
                        f"{num(lecun['forward_total'], lang, 2)}), enquanto a variância do gradiente "
                        f"retropropagado muda por um fator {num(lecun['backward_total'], lang, 2)} "
                        f"da última camada oculta até a primeira; 2/(n_in + n_out) dá "
                        f"{num(xav['forward_total'], lang, 2)} e {num(xav['backward_total'], lang, 2)}: "
                        + ("equilibra os dois sentidos, nenhum exato, ambos mais perto de 1 que o "
                           "pior sentido de 1/n_in" if balances else
                           "não deixa o pior sentido mais perto de 1 do que 1/n_in deixa")
                        + "."))
    tanh = {i: _get(n, "equal", "tanh", i) for i in INITS}
    if all(tanh.values()):
        he, lecun_t = tanh["he"], tanh["lecun"]
        gain_var = TANH_GAIN ** 2
        between = 1 < 2 < gain_var
        keeps = (he["std"][-1] / he["std"][0]) > (lecun_t["std"][-1] / lecun_t["std"][0])
        out.append(pick(lang,
                        f"For tanh, He's 2/n_in lies {'between' if between else 'outside'} lecun's "
                        f"1/n_in and the {num(gain_var, lang, 3)}/n_in that tanh's gain 5/3 asks "
                        f"for (torch.nn.init.calculate_gain); it keeps the activations "
                        f"{'larger' if keeps else 'no larger'} through the layers (std "
                        f"{num(he['std'][0], lang)} → {num(he['std'][-1], lang)} against "
                        f"{num(lecun_t['std'][0], lang)} → {num(lecun_t['std'][-1], lang)} under "
                        f"1/n_in). After training: "
                        + join([f"{i} {fmt_outcome(c['outcome'], lang)}" for i, c in tanh.items()], lang)
                        + ".",
                        f"Para tanh, o 2/n_in de He fica {'entre' if between else 'fora do intervalo entre'} "
                        f"o 1/n_in de LeCun e o {num(gain_var, lang, 3)}/n_in que o ganho 5/3 da tanh "
                        f"pede (torch.nn.init.calculate_gain); ele mantém as ativações "
                        f"{'maiores' if keeps else 'sem aumento'} ao longo das camadas (desvio "
                        f"{num(he['std'][0], lang)} → {num(he['std'][-1], lang)}, contra "
                        f"{num(lecun_t['std'][0], lang)} → {num(lecun_t['std'][-1], lang)} com "
                        f"1/n_in). Após o treino: "
                        + join([f"{i} {fmt_outcome(c['outcome'], lang)}" for i, c in tanh.items()], lang)
                        + "."))
    relu = {i: _get(n, "equal", "relu", i) for i in INITS}
    if all(relu.values()):
        he = relu["he"]
        others = [relu["lecun"], relu["xavier"]]
        best = all((he["test_acc_pct"] or 0) > (c["test_acc_pct"] or 0) for c in others)
        shrink = join([num(c["std"][-1] / c["std"][0], lang, 2) for c in others], lang)
        out.append(pick(lang,
                        f"For ReLU, which zeroes half the signal, the factor 2 decides: under "
                        f"1/n_in and 2/(n_in + n_out) the activation std ends at {shrink} of the "
                        f"first layer's, under 2/n_in at {num(he['std'][-1] / he['std'][0], lang, 2)}; "
                        f"He {'trains best' if best else 'does not train best'} ("
                        + join([f"{i} {fmt_outcome(c['outcome'], lang)}" for i, c in relu.items()], lang)
                        + ").",
                        f"Para ReLU, que zera metade do sinal, o fator 2 decide: com 1/n_in e "
                        f"2/(n_in + n_out) o desvio padrão das ativações termina em {shrink} do da "
                        f"primeira camada, com 2/n_in em {num(he['std'][-1] / he['std'][0], lang, 2)}; "
                        f"He {'treina melhor' if best else 'não treina melhor'} ("
                        + join([f"{i} {fmt_outcome(c['outcome'], lang)}" for i, c in relu.items()], lang)
                        + ")."))
    return out


def table(n: dict, lang: str) -> list[str]:
    rows = [pick(lang, "| widths | activation | init, Var(W) | activation Var last/first hidden "
                       "| gradient Var first/last hidden | Var(Y)/Var(X) per layer, measured "
                       "(n_in Var(W)) | after training |",
                 "| larguras | ativação | inicialização, Var(W) | Var das ativações última/primeira "
                 "oculta | Var do gradiente primeira/última oculta | Var(Y)/Var(X) por camada, "
                 "medida (n_in Var(W)) | após o treino |"), "|---|---|---|---|---|---|---|"]
    arms = {"equal": pick(lang, "equal", "iguais"), "funnel": pick(lang, "funnel", "funil")}
    for c in sorted(n["cells"].values(), key=lambda c: (c["arm"] != "equal", ACTS.index(c["activation"])
                                                       if c["activation"] in ACTS else 9,
                                                       INITS.index(c["init"]) if c["init"] in INITS else 9)):
        meas = (f"{num(min(c['forward_ratio']), lang, 2)}–{num(max(c['forward_ratio']), lang, 2)} "
                f"({num(min(c['forward_predicted']), lang, 2)}–{num(max(c['forward_predicted']), lang, 2)})"
                if c["forward_ratio"] else "-")
        rows.append(f"| {arms.get(c['arm'], c['arm'])} | {c['activation']} | {c['init']} "
                    f"({FORMULA.get(c['init'], '?')}) | {num(c['forward_total'], lang)} "
                    f"| {num(c['backward_total'], lang)} | {meas} | {fmt_outcome(c['outcome'], lang)} |")
    return rows


def verdicts(n: dict, lang: str) -> list[tuple[str, str, str]]:
    out = []
    lecun = _get(n, "equal", "linear", "lecun")
    if lecun and lecun["forward_ratio"]:
        worst = _worst_error(lecun, "forward")
        out.append((pick(lang, "Var(W) = 1/n keeps Var(Y) = Var(X), from Var(Y) = n Var(W) Var(X)",
                         "Var(W) = 1/n mantém Var(Y) = Var(X), pois Var(Y) = n Var(W) Var(X)"),
                    "confirmed" if worst < 0.15 else "contradicted",
                    pick(lang, f"linear network, 1/n_in: Var(Y)/Var(X) "
                               f"{num(min(lecun['forward_ratio']), lang, 2)}"
                               f" to {num(max(lecun['forward_ratio']), lang, 2)} per layer",
                         f"rede linear, 1/n_in: Var(Y)/Var(X) de {num(min(lecun['forward_ratio']), lang, 2)}"
                         f" a {num(max(lecun['forward_ratio']), lang, 2)} por camada")))
    fl, fx = _get(n, "funnel", "linear", "lecun"), _get(n, "funnel", "linear", "xavier")
    if fl and fx and fl["forward_total"]:
        balances = max(_off(fx["forward_total"]), _off(fx["backward_total"])) < \
            max(_off(fl["forward_total"]), _off(fl["backward_total"]))
        out.append((pick(lang, "2/(n_in + n_out) balances the forward and the backward pass",
                         "2/(n_in + n_out) equilibra os sentidos direto e retrógrado"),
                    "confirmed" if balances else "contradicted",
                    pick(lang, f"funnel widths: 1/n_in forward {num(fl['forward_total'], lang, 2)}, "
                               f"backward {num(fl['backward_total'], lang, 2)}; 2/(n_in+n_out) "
                               f"{num(fx['forward_total'], lang, 2)} and "
                               f"{num(fx['backward_total'], lang, 2)}",
                         f"larguras em funil: 1/n_in direto {num(fl['forward_total'], lang, 2)}, "
                         f"retrógrado {num(fl['backward_total'], lang, 2)}; 2/(n_in+n_out) "
                         f"{num(fx['forward_total'], lang, 2)} e {num(fx['backward_total'], lang, 2)}")))
    relu = {i: _get(n, "equal", "relu", i) for i in INITS}
    if all(relu.values()):
        best = max(relu, key=lambda i: relu[i]["test_acc_pct"] or 0)
        out.append((pick(lang, "He's 2/n_in is another variation (for ReLU)",
                         "A de He, 2/n_in, é outra variação (para ReLU)"),
                    "confirmed" if best == "he" else "qualified",
                    pick(lang, "ReLU, 10 layers: ", "ReLU, 10 camadas: ")
                    + ", ".join(f"{i} {fmt_outcome(c['outcome'], lang)}" for i, c in relu.items())))
    return out


def draw(n: dict, lang: str, path) -> None:
    fig, axes = panels(3, rows=2, height=3.4)
    for col, act in enumerate(["tanh", "relu"]):
        for i, init in enumerate(INITS):
            c = _get(n, "equal", act, init)
            if c is None:
                continue
            label = f"{init} ({FORMULA[init]})"
            layers = range(1, len(c["std"]) + 1)
            axes[0][col].plot(layers, c["std"], label=label, **style(i, i != 1))
            axes[1][col].plot(layers, c["backprop"], label=label, **style(i, i != 1))
        axes[0][col].set(title=pick(lang, f"{act}: activation std at init",
                                    f"{act}: desvio das ativações no início"), yscale="log",
                         xlabel=pick(lang, "hidden layer", "camada oculta"),
                         ylabel=pick(lang, "std (log scale)", "desvio padrão (escala log)"))
        axes[1][col].set(title=pick(lang, f"{act}: back-propagated gradient std",
                                    f"{act}: desvio do gradiente retropropagado"), yscale="log",
                         xlabel=pick(lang, "hidden layer", "camada oculta"),
                         ylabel=pick(lang, "std (log scale)", "desvio padrão (escala log)"))
    ax = axes[0][2]
    for i, init in enumerate(INITS):
        c = _get(n, "equal", "linear", init)
        if c is None or not c["forward_ratio"]:
            continue
        layers = range(2, len(c["forward_ratio"]) + 2)
        ax.plot(layers, c["forward_ratio"], label=pick(lang, f"{init}: measured", f"{init}: medida"),
                **style(i))
        ax.plot(layers, c["forward_predicted"], color=f"C{i}", ls=":", lw=2,
                label=f"{init}: n_in Var(W)")
    note(ax, pick(lang, "dotted: n_in Var(W), under the measured lines;\nlecun's and xavier's are both 1",
                  "pontilhadas: n_in Var(W), sob as linhas medidas;\nas de lecun e xavier valem 1"), y=0.12)
    ax.set(title=pick(lang, "linear network: Var(Y)/Var(X) per layer",
                      "rede linear: Var(Y)/Var(X) por camada"),
           xlabel=pick(lang, "layer", "camada"), ylabel="Var(Y)/Var(X)", ylim=(0, 4.2))
    ax = axes[1][2]
    for i, init in enumerate(["lecun", "xavier"]):
        c = _get(n, "funnel", "linear", init)
        if c is None or not c["std"]:
            continue
        layers = range(1, len(c["std"]) + 1)
        ax.plot(layers, [(s / c["std"][0]) ** 2 for s in c["std"]], label=pick(
            lang, f"{init}: activations", f"{init}: ativações"), **style(i))
        ax.plot(layers, [(g / c["backprop"][-1]) ** 2 for g in c["backprop"]], label=pick(
            lang, f"{init}: gradient", f"{init}: gradiente"), **{**style(i), "ls": "--", "mfc": "none"})
    ax.axhline(1, color="grey", lw=0.8)
    ax.set(title=pick(lang, "funnel widths, linear: Var relative to its start",
                      "larguras em funil, linear: Var relativa ao início"), yscale="log",
           xlabel=pick(lang, "hidden layer", "camada oculta"),
           ylabel=pick(lang, "variance ratio (log scale)", "razão de variâncias (escala log)"))
    for row in axes:
        for ax in row:
            integer_axis(ax)
            legend(ax, lang, **({"loc": "upper center", "ncol": 2} if ax is axes[0][2] else {}))
    save(fig, path, lang)
