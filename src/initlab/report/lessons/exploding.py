"""Lesson 8: exploding gradients (a deep ReLU net initialised too large) and three cures; and,
across the lessons' sweeps, how often gradients explode against how often they vanish."""

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
    ordered,
    outcome,
    panels,
    pick,
    save,
    style,
)

TITLE = {"en": "Exploding gradients", "pt-BR": "Gradientes explosivos"}
CLAIM = {"en": "Exploding gradients are the opposite problem: gradients grow toward the input "
               "and training blows up; it is rarer than vanishing.",
         "pt-BR": "Gradientes explosivos são o problema oposto: o gradiente cresce em direção à "
                  "entrada e o treino explode; é mais raro que o desaparecimento."}
ORDER = ["too_large", "he", "clipping", "batchnorm"]
ARM = {"too_large": {"en": "too large (gain 2)", "pt-BR": "grande demais (ganho 2)"},
       "he": {"en": "He (gain √2)", "pt-BR": "He (ganho √2)"},
       "clipping": {"en": "too large + clipping", "pt-BR": "grande demais + corte"},
       "batchnorm": {"en": "too large + batch norm", "pt-BR": "grande demais + normalização"}}
SCALED = ("standard", "lecun", "xavier", "he")  # inits that scale with the layer's size


def measure(runs: list[Run]) -> dict:
    table, shared = by(runs, "arm/exploding")
    arms = {}
    for arm in ordered((a for a, in table), ORDER):
        run = table[(arm,)]
        back = init_layer_stat(run, "backprop_std")
        arms[arm] = {"layers": [n for n, _ in back], "backprop": [v for _, v in back],
                     "growth": back[0][1] / back[-1][1] if back and back[-1][1] else None,
                     "gain": choice(run, "init.gain"), "loss": [list(p) for p in run.scalars("train/loss")],
                     "outcome": outcome(run), "status": outcome(run)["status"],
                     "test_acc_pct": outcome(run)["test_acc_pct"],
                     "diverged_step": (run.result or {}).get("diverged_step")}
    depth = next((choice(r, "model.depth") for r in runs), None)
    return {"arms": arms, "depth": depth, "shared": shared}


def _name(arm: str, lang: str) -> str:
    return ARM.get(arm, {}).get(lang, arm)


def describe(n: dict, lang: str) -> list[str]:
    arms, out = n["arms"], []
    big = arms.get("too_large")
    if big and big["growth"]:
        per_layer = math.sqrt(2)  # Var(W) = 4/n_in doubles the variance: the std grows by sqrt(2)
        predicted = per_layer ** (len(big["layers"]) - 1)
        blew = big["status"] == "diverged"
        out.append(pick(lang,
                        f"He's draw with gain {num(big['gain'], lang)} instead of √2 doubles the "
                        f"variance at every layer: at init the back-propagated gradient is "
                        f"{num(big['growth'], lang)} times larger at the first hidden layer than at "
                        f"the last (√2 a layer over {len(big['layers']) - 1} layers predicts "
                        f"{num(predicted, lang)}), and SGD "
                        + (f"diverges at step {big['diverged_step']}." if blew
                           else f"does not diverge ({fmt_outcome(big['outcome'], lang)})."),
                        f"O sorteio de He com ganho {num(big['gain'], lang)} em vez de √2 dobra a "
                        f"variância a cada camada: no início, o gradiente retropropagado é "
                        f"{num(big['growth'], lang)} vezes maior na primeira camada oculta do que na "
                        f"última (√2 por camada em {len(big['layers']) - 1} camadas prevê "
                        f"{num(predicted, lang)}), e o SGD "
                        + (f"diverge no passo {big['diverged_step']}." if blew
                           else f"não diverge ({fmt_outcome(big['outcome'], lang)}).")))
    cures = {a: v for a, v in arms.items() if a != "too_large"}
    if cures:
        trained = {a: v for a, v in cures.items() if v["test_acc_pct"] is not None}
        best = max(trained, key=lambda a: trained[a]["test_acc_pct"]) if trained else None
        parts = [pick(lang, f"{_name(a, lang)}: gradient ×{num(v['growth'], lang, 2)} toward the input, "
                            f"{fmt_outcome(v['outcome'], lang)}",
                      f"{_name(a, lang)}: gradiente ×{num(v['growth'], lang, 2)} em direção à entrada, "
                      f"{fmt_outcome(v['outcome'], lang)}") for a, v in cures.items()]
        text = pick(lang, "The cures: ", "Os remédios: ") + "; ".join(parts) + "."
        if best:
            text += pick(lang, f" {_name(best, lang).capitalize()} trains best.",
                         f" {_name(best, lang).capitalize()} é o que treina melhor.")
        if big and "clipping" in cures and cures["clipping"]["backprop"] == big["backprop"]:
            text += pick(lang, " Clipping leaves the initial weights as they are (the same gradient "
                               "profile at init as the too-large draw) and only bounds each step.",
                         " O corte (clipping) não muda os pesos iniciais (o mesmo perfil de "
                         "gradiente no início que o sorteio grande demais); só limita cada passo.")
        out.append(text)
    return out


def rarity(lessons: dict[str, dict], lang: str) -> tuple[str, tuple[str, str, str]] | None:
    """Across the sweeps of lessons 3 and 7 (inits that scale with the layer size, no batch
    norm): how many runs start with the first layer's gradient 10x smaller than the last
    hidden layer's (vanishing) and how many 10x larger (exploding). A sentence and a verdict."""
    ratios = {}  # run label -> first/last hidden back-propagated gradient std at init
    for key, cell in (lessons.get("vanishing") or {}).get("cells", {}).items():
        if not cell["bn"] and cell["init"] in SCALED:
            ratios.update({f"{key}/depth={d}": v["ratio"] for d, v in cell["depths"].items() if v["ratio"]})
    for key, cell in (lessons.get("xavier_variants") or {}).get("cells", {}).items():
        if cell["init"] in SCALED and cell["backprop"]:
            ratios[key] = cell["backprop"][0] / cell["backprop"][-1]
    if not ratios:
        return None
    vanish = sum(r < 0.1 for r in ratios.values())
    exploded = [k for k, r in ratios.items() if r > 10]
    explode = len(exploded)
    if lang == "pt-BR":  # the run labels in the reader's words
        words = {"equal": "iguais", "funnel": "funil", "plain": "sem normalização",
                 "sigmoid": "sigmoide", "depth=": "profundidade="}
        for en, pt in words.items():
            exploded = [k.replace(en, pt) for k in exploded]
    which = f" ({', '.join(exploded)})" if exploded else ""
    naive = (lessons.get("naive_init") or {}).get("cells", {})
    diverged = [k for k, c in naive.items() if c["outcome"]["status"] == "diverged"]
    rarer = explode < vanish
    sentence = pick(lang,
                    f"Is explosion rarer? Of the {len(ratios)} runs of lessons 3 and 7 whose init "
                    f"scales with the layer size (no batch norm), {vanish} start with the first "
                    f"layer's gradient over 10 times smaller than the last hidden layer's and "
                    f"{explode} with it over 10 times larger{which}: here explosion is "
                    + ("rarer" if rarer else "not rarer")
                    + ". The naive draws that ignore the layer size "
                    + (f"diverged in lesson 2 ({join(diverged, lang)})" if diverged
                       else "did not diverge in lesson 2")
                    + ", and this lesson forces it with a variance doubled at every layer.",
                    f"A explosão é mais rara? Das {len(ratios)} execuções das lições 3 e 7 cuja "
                    f"inicialização se ajusta ao tamanho da camada (sem normalização em lote), "
                    f"{vanish} começam com o gradiente da primeira camada mais de 10 vezes menor que "
                    f"o da última camada oculta e {explode} com ele mais de 10 vezes maior{which}: aqui a "
                    "explosão " + ("é mais rara" if rarer else "não é mais rara")
                    + ". Os sorteios ingênuos, que ignoram o tamanho da camada, "
                    + (f"divergiram na lição 2 ({join(diverged, lang)})" if diverged
                       else "não divergiram na lição 2")
                    + ", e esta lição provoca a explosão com uma variância dobrada a cada camada.")
    verdict = (pick(lang, "Exploding gradients are rarer than vanishing ones",
                    "Gradientes explosivos são mais raros que o desaparecimento"),
               "confirmed" if rarer else "contradicted",
               pick(lang, f"{explode} of {len(ratios)} runs start with ×10 growth toward the input, "
                          f"{vanish} with ×10 decay", f"{explode} de {len(ratios)} execuções começam "
                          f"com crescimento ×10 em direção à entrada, {vanish} com queda ×10"))
    return sentence, verdict


def table(n: dict, lang: str) -> list[str]:
    rows = [pick(lang, "| arm | gradient std at init, last hidden layer → first | growth | outcome |",
                 "| braço | desvio do gradiente no início, última camada oculta → primeira | "
                 "crescimento | resultado |"),
            "|---|---|---|---|"]
    for arm, v in n["arms"].items():
        first, last = (v["backprop"][0], v["backprop"][-1]) if v["backprop"] else (None, None)
        rows.append(f"| {_name(arm, lang)} | {num(last, lang)} → {num(first, lang)} "
                    f"| ×{num(v['growth'], lang)} | {fmt_outcome(v['outcome'], lang)} |")
    return rows


def verdicts(n: dict, lang: str) -> list[tuple[str, str, str]]:
    big = n["arms"].get("too_large")
    if not big or big["growth"] is None:
        return []
    grows, blew = big["growth"] > 10, big["status"] == "diverged"
    return [(pick(lang, "Exploding gradients: gradients grow toward the input and training blows up",
                  "Gradientes explosivos: o gradiente cresce em direção à entrada e o treino explode"),
             "confirmed" if grows and blew else "qualified" if grows or blew else "contradicted",
             pick(lang, f"×{num(big['growth'], lang)} toward the input, {fmt_outcome(big['outcome'], lang)}",
                  f"×{num(big['growth'], lang)} em direção à entrada, {fmt_outcome(big['outcome'], lang)}"))]


def draw(n: dict, lang: str, path) -> None:
    fig, axes = panels(2, width=5.2)
    arms = n["arms"]
    for i, (arm, v) in enumerate(arms.items()):
        if v["backprop"]:
            axes[0][0].plot(range(1, len(v["backprop"]) + 1), v["backprop"], label=_name(arm, lang),
                            **style(i, filled=arm != "clipping"))
        if v["loss"]:
            axes[0][1].plot(*zip(*v["loss"]), label=_name(arm, lang),
                            **{**style(i), "markevery": max(1, len(v["loss"]) // 8)})
    big, clip = arms.get("too_large"), arms.get("clipping")
    if big and clip and big["backprop"] == clip["backprop"]:
        note(axes[0][0], pick(lang, "clipping lies on the too-large line: same initial weights",
                              "o corte fica sobre a linha grande demais: mesmos pesos iniciais"))
    if big and big["status"] == "diverged":
        # the diverging loss would squeeze every other curve flat: cap the axis above the others
        others = [v for a, v in arms.items() if a != "too_large" and v["loss"]]
        ys = [y for v in others for _, y in v["loss"] if y > 0]
        if ys:
            axes[0][1].set_ylim(min(ys) / 3, 100 * max(ys))
        note(axes[0][1], pick(lang, f"too large: off the top, not finite from step {big['diverged_step']}",
                              f"grande demais: sai por cima, perda não finita a partir do passo "
                              f"{big['diverged_step']}"))
    axes[0][0].set(yscale="log", xlabel=pick(lang, "hidden layer (input → output)",
                                             "camada oculta (entrada → saída)"),
                   ylabel=pick(lang, "gradient std (log scale)", "desvio do gradiente (escala log)"),
                   title=pick(lang, "back-propagated gradient per layer, at init",
                              "gradiente retropropagado por camada, no início"))
    integer_axis(axes[0][0])
    axes[0][1].set(yscale="log", xlabel=pick(lang, "step", "passo"),
                   ylabel=pick(lang, "training loss (log scale)", "perda de treino (escala log)"),
                   title=pick(lang, "training loss", "perda de treino"))
    for ax in axes[0]:
        legend(ax, lang, loc="upper right")
    save(fig, path, lang)
