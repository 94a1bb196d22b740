"""Lesson 7: vanishing gradients against depth, under standard and xavier init, with and
without batch norm."""

from __future__ import annotations

from initlab.report.collect import Run
from initlab.report.lessons.common import (
    choice,
    fmt_outcome,
    init_layer_stat,
    legend,
    num,
    ordered,
    outcome,
    panels,
    pick,
    read_json,
    save,
    steps_of,
    style,
)

TITLE = {"en": "Vanishing gradients", "pt-BR": "Gradiente de desaparecimento"}
CLAIM = {"en": "The deeper the network, the less the layers near the input feel the error at the "
               "output; in very deep networks the first weights barely change; good "
               "initialization and normalization mitigate it, and with both you rarely have to "
               "worry.",
         "pt-BR": "Quanto mais profunda a rede, menos as camadas perto da entrada sentem o erro da "
                  "saída; em redes muito profundas os primeiros pesos quase não mudam; uma boa "
                  "inicialização e a normalização atenuam o problema, e com as duas raramente é "
                  "preciso se preocupar."}
ACTS = ["sigmoid", "tanh"]


def _act(act: str, lang: str) -> str:
    return act if lang == "en" else act.replace("sigmoid", "sigmoide")


def measure(runs: list[Run]) -> dict:
    cells = {}
    for run in runs:
        act, init, bn = run.activation, run.init, bool(choice(run, "model.batchnorm"))
        depth = choice(run, "model.depth")
        back = init_layer_stat(run, "backprop_std")
        summary = read_json(run, "weights.json")
        key = f"{act}/{init}/{'bn' if bn else 'plain'}"
        cells.setdefault(key, {"activation": act, "init": init, "bn": bn, "depths": {}})
        cells[key]["depths"][str(depth)] = {
            "ratio": back[0][1] / back[-1][1] if back and back[-1][1] else None,
            "first_layer_change": (summary["layers"][back[0][0]]["change_rel"]
                                   if summary and back else None),
            "outcome": outcome(run), "test_acc_pct": outcome(run)["test_acc_pct"]}
    depths = sorted({int(d) for c in cells.values() for d in c["depths"]})
    order = {f"{a}/{i}/{b}": k for k, (a, i, b) in enumerate(
        (a, i, b) for a in ACTS for i in ("standard", "xavier") for b in ("plain", "bn"))}
    cells = dict(sorted(cells.items(), key=lambda kv: order.get(kv[0], 99)))
    return {"cells": cells, "depths": depths, "steps": steps_of(runs), "shared": []}


def _label(c: dict, lang: str) -> str:
    return c["init"] + (pick(lang, " + batch norm", " + norm. em lote") if c["bn"] else "")


def _ends(c: dict, depths: list[int]) -> tuple[dict, dict]:
    return c["depths"].get(str(depths[0]), {}), c["depths"].get(str(depths[-1]), {})


def describe(n: dict, lang: str) -> list[str]:
    out, depths = [], n["depths"]
    if len(depths) < 2:
        return out
    lo, hi = depths[0], depths[-1]
    for act in ordered({c["activation"] for c in n["cells"].values()}, ACTS):
        plain = [c for c in n["cells"].values() if c["activation"] == act and not c["bn"]]
        normed = [c for c in n["cells"].values() if c["activation"] == act and c["bn"]]
        parts = []
        for c in plain:
            a, b = _ends(c, depths)
            if a.get("ratio") is None or b.get("ratio") is None:
                continue
            falls = b["ratio"] < a["ratio"]
            moved = b.get("first_layer_change")
            still = moved == 0
            parts.append(pick(lang,
                              f"under {c['init']} the first layer's share of the last hidden layer's "
                              f"gradient {'falls' if falls else 'rises'} from {num(a['ratio'], lang)} at "
                              f"depth {lo} to {num(b['ratio'], lang)} at {hi}, and after "
                              f"{n['steps']} steps the first layer of the {hi}-layer net "
                              + ("has not moved at all (relative change 0 in float32)" if still else
                                 f"moved {num(moved, lang, 2)} of its norm (against "
                                 f"{num(a.get('first_layer_change'), lang, 2)} at depth {lo})"),
                              f"com {c['init']}, a fração do gradiente da última camada oculta que "
                              f"chega à primeira {'cai' if falls else 'sobe'} de {num(a['ratio'], lang)} "
                              f"na profundidade {lo} para {num(b['ratio'], lang)} na {hi}, e depois de "
                              f"{n['steps']} passos a primeira camada da rede de {hi} camadas "
                              + ("não se moveu nada (variação relativa 0 em float32)" if still else
                                 f"variou {num(moved, lang, 2)} da sua norma (contra "
                                 f"{num(a.get('first_layer_change'), lang, 2)} na profundidade {lo})")))
        if parts:
            out.append(pick(lang, f"{_act(act, lang).capitalize()} without normalization: ",
                            f"{_act(act, lang).capitalize()} sem normalização: ")
                       + "; ".join(parts) + ".")
        std = next((c for c in plain if c["init"] == "standard"), None)
        xav = next((c for c in plain if c["init"] == "xavier"), None)
        if std and xav:
            s, x = _ends(std, depths)[1].get("ratio"), _ends(xav, depths)[1].get("ratio")
            if s and x:
                helps = x > 10 * s
                gone = x < 1e-3  # a thousandth of the last layer's gradient: vanished all the same
                still_en = ", but what reaches the first layer is still vanishingly small" if gone else ""
                still_pt = ", mas o que chega à primeira camada continua ínfimo" if gone else ""
                out.append(pick(lang,
                                f"Xavier {'slows' if helps else 'does not slow'} the decay for {act}: "
                                f"{num(x, lang)} against {num(s, lang)} at depth {hi}{still_en}.",
                                f"Xavier {'desacelera' if helps else 'não desacelera'} o decaimento "
                                f"para a {_act(act, lang)}: {num(x, lang)} contra {num(s, lang)} na "
                                f"profundidade {hi}{still_pt}."))
        if normed:
            ratios = [d["ratio"] for c in normed for d in c["depths"].values() if d["ratio"]]
            accs = [(c, _ends(c, depths)) for c in normed]
            kept = min(ratios) > 0.5 if ratios else False
            over = max(ratios) > 1.5 if ratios else False
            listing = "; ".join(f"{_label(c, lang)} {fmt_outcome(a.get('outcome'), lang)} → "
                                f"{fmt_outcome(b.get('outcome'), lang)}" for c, (a, b) in accs)
            out.append(pick(lang,
                            f"With batch norm the ratio stays between {num(min(ratios), lang, 2)} and "
                            f"{num(max(ratios), lang, 2)} at every depth: "
                            + ("no decay" if kept else "still some decay")
                            + ("; it even over-corrects, the first layer getting more than the last"
                               if over else "")
                            + f". Test accuracy from depth {lo} to {hi}: {listing}.",
                            f"Com normalização em lote, a razão fica entre {num(min(ratios), lang, 2)} "
                            f"e {num(max(ratios), lang, 2)} em todas as profundidades: "
                            + ("sem decaimento" if kept else "ainda há algum decaimento")
                            + ("; ela até corrige demais, e a primeira camada recebe mais que a "
                               "última" if over else "")
                            + f". Acurácia de teste da profundidade {lo} à {hi}: {listing}."))
    return out


def table(n: dict, lang: str) -> list[str]:
    rows = [pick(lang, "| activation | init | batch norm | depth | gradient std first/last hidden "
                       "at init | first layer relative change | test accuracy |",
                 "| ativação | inicialização | normalização em lote | profundidade | desvio do "
                 "gradiente primeira/última oculta no início | variação relativa da primeira "
                 "camada | acurácia de teste |"), "|---|---|---|---|---|---|---|"]
    yes, no = pick(lang, "yes", "sim"), pick(lang, "no", "não")
    for c in n["cells"].values():
        for d in sorted(c["depths"], key=int):
            r = c["depths"][d]
            rows.append(f"| {_act(c['activation'], lang)} | {c['init']} | {yes if c['bn'] else no} "
                        f"| {d} | {num(r['ratio'], lang)} | {num(r['first_layer_change'], lang)} "
                        f"| {fmt_outcome(r['outcome'], lang)} |")
    return rows


def verdicts(n: dict, lang: str) -> list[tuple[str, str, str]]:
    depths, out = n["depths"], []
    if len(depths) < 2:
        return out
    lo, hi = depths[0], depths[-1]
    plain = [c for c in n["cells"].values() if not c["bn"]]
    falls = [c for c in plain
             if (_ends(c, depths)[1].get("ratio") or 0) < (_ends(c, depths)[0].get("ratio") or 0)]
    worst = min(plain, key=lambda c: _ends(c, depths)[1].get("ratio") or 1e9, default=None)
    if worst:
        a, b = _ends(worst, depths)
        out.append((pick(lang, "The deeper the network, the less the input-side layers feel the "
                               "output's error",
                         "Quanto mais profunda a rede, menos as camadas da entrada sentem o erro da saída"),
                    "confirmed" if len(falls) == len(plain) else "qualified",
                    f"{_act(worst['activation'], lang)}/{worst['init']}: "
                    + pick(lang, "gradient first/last ", "gradiente primeira/última ")
                    + f"{num(a['ratio'], lang)} ({lo}) → {num(b['ratio'], lang)} ({hi})"))
        out.append((pick(lang, "In very deep networks the first weights barely change",
                         "Em redes muito profundas os primeiros pesos quase não mudam"),
                    "confirmed" if ((b.get("first_layer_change") or 0)
                                    < 0.1 * (a.get("first_layer_change") or 1))
                    else "qualified",
                    f"{_act(worst['activation'], lang)}/{worst['init']}: "
                    + pick(lang, "first layer change ", "variação da primeira camada ")
                    + f"{num(a.get('first_layer_change'), lang, 2)} ({lo}) → "
                      f"{num(b.get('first_layer_change'), lang, 2)} ({hi})"))
    both = [c for c in n["cells"].values() if c["bn"] and c["init"] == "xavier"]
    if both:
        drops = [(c, _ends(c, depths)) for c in both]
        fine = all((b.get("test_acc_pct") or 0) > (a.get("test_acc_pct") or 0) - 5 for _, (a, b) in drops)
        out.append((pick(lang, "With good initialization and normalization you rarely have to worry",
                         "Com boa inicialização e normalização raramente é preciso se preocupar"),
                    "confirmed" if fine else "qualified",
                    "; ".join(f"{_act(c['activation'], lang)} xavier + BN: "
                              f"{fmt_outcome(a.get('outcome'), lang)} ({lo}) → "
                              f"{fmt_outcome(b.get('outcome'), lang)} ({hi})" for c, (a, b) in drops)))
    return out


def draw(n: dict, lang: str, path) -> None:
    acts = ordered({c["activation"] for c in n["cells"].values()}, ACTS)
    fig, axes = panels(len(acts), rows=2, height=3.8, width=5.6)
    depths = n["depths"]
    for col, act in enumerate(acts):
        mine = [c for c in n["cells"].values() if c["activation"] == act]
        changes = [d["first_layer_change"] for c in mine for d in c["depths"].values()
                   if d["first_layer_change"]]
        floor = min(changes) / 10 if changes else 1e-12
        zero_seen = False
        for i, c in enumerate(mine):
            ds = sorted(c["depths"], key=int)
            look = style(i, filled=not c["bn"])
            axes[0][col].plot([int(d) for d in ds], [c["depths"][d]["ratio"] for d in ds],
                              label=_label(c, lang), **look)
            ys = []
            for d in ds:
                v = c["depths"][d]["first_layer_change"]
                zero_seen |= v == 0
                ys.append(floor if v == 0 else v)
            axes[1][col].plot([int(d) for d in ds], ys, label=_label(c, lang), **look)
        axes[0][col].set(title=pick(lang, f"{act}: gradient std first/last hidden layer, at init",
                                    f"{_act(act, lang)}: gradiente primeira/última camada, no início"),
                         xlabel=pick(lang, "depth (hidden layers)", "profundidade (camadas ocultas)"),
                         ylabel=pick(lang, "ratio (log scale)", "razão (escala log)"), yscale="log")
        axes[1][col].set(title=pick(lang, f"{act}: first layer ‖ΔW‖/‖W₀‖ after training",
                                    f"{_act(act, lang)}: ‖ΔW‖/‖W₀‖ da primeira camada após o treino"),
                         xlabel=pick(lang, "depth (hidden layers)", "profundidade (camadas ocultas)"),
                         ylabel=pick(lang, "relative change (log scale)", "variação relativa (escala log)"),
                         yscale="log")
        if zero_seen:  # a change of exactly 0 has no place on a log axis: drawn on a floor line
            axes[1][col].axhline(floor, color="grey", lw=0.6, ls=":")
            axes[1][col].set_title(axes[1][col].get_title() + pick(
                lang, "\n(on the dotted line: did not move at all, 0)",
                "\n(na linha pontilhada: não se moveu nada, 0)"))
        for row in range(2):
            axes[row][col].set_xticks(depths)
            legend(axes[row][col], lang)
    save(fig, path, lang)
