"""Lesson 5: the batch size: gradient noise, time per step and per epoch, accuracy under the
same epochs and under the same wall clock."""

from __future__ import annotations

import math

from initlab.report.collect import Run
from initlab.report.lessons.common import (
    by,
    choice,
    integer,
    legend,
    mean,
    num,
    outcome,
    panels,
    pct,
    pick,
    save,
    style,
)

TITLE = {"en": "The batch size", "pt-BR": "O tamanho do lote"}
CLAIM = {"en": "Minibatches make stochastic gradient descent possible; small batches represent "
               "the data less well; large batches take longer to train; all the data at once "
               "is too expensive.",
         "pt-BR": "Os minilotes tornam possível a descida de gradiente estocástica; lotes "
                  "pequenos representam pior os dados; lotes grandes levam mais tempo de treino; "
                  "usar todos os dados de uma vez é caro demais."}


def seconds(duration: str) -> float:
    """Lightning's "DD:HH:MM:SS" in seconds."""
    days, hours, minutes, secs = (float(part) for part in str(duration).split(":"))
    return ((days * 24 + hours) * 60 + minutes) * 60 + secs


def steps_per_epoch(epochs_run: Run | None, time_run: Run, bs: int) -> int | None:
    """Steps in one epoch: counted by the same-epochs run of this batch size when it finished
    (its steps over its epochs), else from the training examples the config names; None when
    neither says (lesson.scale=full leaves data.train_samples null: the whole set)."""
    if epochs_run is not None and epochs_run.result and epochs_run.result.get("epochs"):
        return round(epochs_run.result["steps"] / epochs_run.result["epochs"])
    examples = choice(time_run, "data.train_samples")
    return math.ceil(examples / bs) if examples else None


def measure(runs: list[Run]) -> dict:
    table, shared = by(runs, "arm/batch_size", "data.batch_size")
    sizes = sorted({bs for _, bs in table})
    numbers: dict = {"sizes": sizes, "shared": shared}
    for bs in sizes:
        epochs_run, time_run = table.get(("epochs", bs)), table.get(("time", bs))
        n = numbers[str(bs)] = {}
        if epochs_run is not None and epochs_run.result:
            cosines = [v for _, v in epochs_run.scalars("grad_noise/cosine")]
            n.update(cosine_mean=mean(cosines), epochs=epochs_run.result.get("epochs"),
                     steps_epochs=epochs_run.result.get("steps"),
                     acc_epochs_pct=outcome(epochs_run)["test_acc_pct"],
                     subset=choice(epochs_run, "callbacks.grad_noise.num_examples"))
        if time_run is not None and time_run.result:
            # the wall-clock arm has no gradient-noise measurements; time/train_s leaves
            # validation out
            clock = time_run.scalars("time/train_s")
            per_epoch = steps_per_epoch(epochs_run, time_run, bs)
            step_ms = 1000 * clock[-1][1] / clock[-1][0] if clock and clock[-1][0] else None
            n.update(acc_time_pct=outcome(time_run)["test_acc_pct"], time_steps=time_run.result.get("steps"),
                     time_budget=seconds(choice(time_run, "trainer.max_time")), step_ms=step_ms,
                     epoch_s=step_ms * per_epoch / 1000 if step_ms and per_epoch else None)
    return numbers


def _with(n: dict, key: str) -> list[int]:
    return [b for b in n["sizes"] if n[str(b)].get(key) is not None]


def describe(n: dict, lang: str) -> list[str]:
    out = []
    noisy = _with(n, "cosine_mean")
    if len(noisy) >= 2:
        lo, hi = (n[str(b)] for b in (noisy[0], noisy[-1]))
        less = lo["cosine_mean"] < hi["cosine_mean"]
        out.append(pick(lang,
                        f"Small batches represent the data {'less' if less else 'no less'} well: the "
                        f"step's gradient agrees with the gradient of a fixed "
                        f"{integer(lo['subset'], lang)}-example training subset with cosine "
                        f"{num(lo['cosine_mean'], lang, 2)} at batch size {noisy[0]} and "
                        f"{num(hi['cosine_mean'], lang, 2)} at {integer(noisy[-1], lang)} (mean over "
                        f"training; 1 is the same direction).",
                        f"Lotes pequenos representam "
                        f"{'pior os dados' if less else 'os dados tão bem quanto os grandes'}: "
                        f"o gradiente de cada passo concorda com o gradiente de um subconjunto fixo "
                        f"de {integer(lo['subset'], lang)} exemplos de treino com cosseno "
                        f"{num(lo['cosine_mean'], lang, 2)} no lote de tamanho {noisy[0]} e "
                        f"{num(hi['cosine_mean'], lang, 2)} no de {integer(noisy[-1], lang)} (média "
                        f"ao longo do treino; 1 é a mesma direção)."))
    timed = [b for b in _with(n, "step_ms") if n[str(b)].get("epoch_s")]
    if len(timed) >= 2:
        lo_b, hi_b = timed[0], timed[-1]
        lo, hi = n[str(lo_b)], n[str(hi_b)]
        longer = hi["epoch_s"] > lo["epoch_s"]
        cheap = hi["step_ms"] / lo["step_ms"] < (hi_b / lo_b) / 4  # per example, a big step is cheaper
        far_en, far_pt = ("far less than", "bem menos que") if cheap else ("close to", "perto de")
        out.append(pick(lang,
                        f"A step of {integer(hi_b, lang)} examples costs "
                        f"{num(hi['step_ms'] / lo['step_ms'], lang, 2)}x a step of {lo_b} "
                        f"({num(hi['step_ms'], lang)} ms against {num(lo['step_ms'], lang)} ms), {far_en} "
                        f"{integer(hi_b // lo_b, lang)}x, so an epoch takes "
                        f"{num(hi['epoch_s'], lang, 2)} s at {integer(hi_b, lang)} and "
                        f"{num(lo['epoch_s'], lang, 3)} s at {lo_b} (training time, validation "
                        f"excluded). The course says larger batches take longer to train: per "
                        f"epoch these numbers say {'the same' if longer else 'the opposite'}.",
                        f"Um passo com {integer(hi_b, lang)} exemplos custa "
                        f"{num(hi['step_ms'] / lo['step_ms'], lang, 2)} vezes um passo com {lo_b} "
                        f"({num(hi['step_ms'], lang)} ms contra {num(lo['step_ms'], lang)} ms), {far_pt} "
                        f"{integer(hi_b // lo_b, lang)} vezes; por isso uma época leva "
                        f"{num(hi['epoch_s'], lang, 2)} s com lotes de {integer(hi_b, lang)} e "
                        f"{num(lo['epoch_s'], lang, 3)} s com lotes de {lo_b} (tempo de treino, sem "
                        f"a validação). A aula diz que lotes grandes levam mais tempo de treino: "
                        f"por época, estes números dizem {'o mesmo' if longer else 'o contrário'}."))
    for key, budget in (("acc_epochs_pct", "epochs"), ("acc_time_pct", "time")):
        have = _with(n, key)
        if not have:
            continue
        top = max(have, key=lambda b: n[str(b)][key])
        low = min(have, key=lambda b: n[str(b)][key])
        listing = ", ".join(f"{integer(b, lang)}: {pct(n[str(b)][key], lang)}" for b in have)
        if budget == "epochs":
            head = pick(lang, f"After the same {n[str(have[0])]['epochs']} epochs at the same rate",
                        f"Depois das mesmas {n[str(have[0])]['epochs']} épocas, com a mesma taxa")
        else:
            head = pick(lang, f"After the same {num(n[str(have[0])]['time_budget'], lang)} s of fit",
                        f"Depois dos mesmos {num(n[str(have[0])]['time_budget'], lang)} s de treino")
        key_steps = "steps_epochs" if budget == "epochs" else "time_steps"
        steps = {b: n[str(b)].get(key_steps) for b in (have[0], have[-1])}
        out.append(pick(lang, f"{head}: {listing}; the highest at {integer(top, lang)}, the lowest at "
                              f"{integer(low, lang)}; batch size {have[0]} made "
                              f"{integer(steps[have[0]], lang)} steps, {integer(have[-1], lang)} made "
                              f"{integer(steps[have[-1]], lang)}.",
                        f"{head}: {listing}; a maior acurácia com {integer(top, lang)}, a menor com "
                        f"{integer(low, lang)}; o lote de {have[0]} deu {integer(steps[have[0]], lang)} "
                        f"passos, o de {integer(have[-1], lang)} deu {integer(steps[have[-1]], lang)}."))
    return out


def table(n: dict, lang: str) -> list[str]:
    rows = [pick(lang, "| batch size | cosine to the subset gradient | ms per step | s per epoch "
                       "| test acc, same epochs | test acc, same wall clock |",
                 "| tamanho do lote | cosseno com o gradiente do subconjunto | ms por passo "
                 "| s por época | acurácia, mesmas épocas | acurácia, mesmo tempo |"),
            "|---|---|---|---|---|---|"]
    for b in n["sizes"]:
        r = n[str(b)]
        rows.append(f"| {integer(b, lang)} | {num(r.get('cosine_mean'), lang)} | "
                    f"{num(r.get('step_ms'), lang)} "
                    f"| {num(r.get('epoch_s'), lang)} | {pct(r.get('acc_epochs_pct'), lang)} "
                    f"| {pct(r.get('acc_time_pct'), lang)} |")
    return rows


def verdicts(n: dict, lang: str) -> list[tuple[str, str, str]]:
    out = []
    noisy = _with(n, "cosine_mean")
    if len(noisy) >= 2:
        lo, hi = n[str(noisy[0])], n[str(noisy[-1])]
        out.append((pick(lang, "Small batches represent the data less well",
                         "Lotes pequenos representam pior os dados"),
                    "confirmed" if lo["cosine_mean"] < hi["cosine_mean"] else "contradicted",
                    pick(lang, "cosine to the subset gradient ", "cosseno com o gradiente do subconjunto ")
                    + f"{num(lo['cosine_mean'], lang, 2)} ({noisy[0]}) → "
                      f"{num(hi['cosine_mean'], lang, 2)} ({integer(noisy[-1], lang)})"))
    timed = [b for b in _with(n, "step_ms") if n[str(b)].get("epoch_s")]
    if len(timed) >= 2:
        lo, hi = n[str(timed[0])], n[str(timed[-1])]
        longer = hi["epoch_s"] > lo["epoch_s"]
        out.append((pick(lang, "Large batches take longer to train",
                         "Lotes grandes levam mais tempo de treino"),
                    "confirmed" if longer else "contradicted",
                    pick(lang, "per epoch: ", "por época: ")
                    + f"{num(hi['epoch_s'], lang, 2)} s ({integer(timed[-1], lang)}) "
                    + pick(lang, "vs", "contra") + f" {num(lo['epoch_s'], lang, 3)} s ({timed[0]})"))
    have = _with(n, "acc_epochs_pct")
    if len(have) >= 2:
        big, best = have[-1], max(have, key=lambda b: n[str(b)]["acc_epochs_pct"])
        worse = n[str(big)]["acc_epochs_pct"] < n[str(best)]["acc_epochs_pct"] - 5
        out.append((pick(lang, "All the data at once (huge batches) is too expensive",
                         "Usar todos os dados de uma vez (lotes enormes) é caro demais"),
                    "qualified" if worse else "contradicted",
                    pick(lang, f"same epochs: {integer(big, lang)} → "
                               f"{pct(n[str(big)]['acc_epochs_pct'], lang)} "
                               f"in {n[str(big)]['steps_epochs']} steps, {integer(best, lang)} → "
                               f"{pct(n[str(best)]['acc_epochs_pct'], lang)}: costly in steps, not in time",
                         f"mesmas épocas: {integer(big, lang)} → {pct(n[str(big)]['acc_epochs_pct'], lang)} "
                         f"em {n[str(big)]['steps_epochs']} passos, {integer(best, lang)} → "
                         f"{pct(n[str(best)]['acc_epochs_pct'], lang)}: caro em passos, não em tempo")))
    return out


def _log2_axis(ax, sizes, lang):
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes)
    ax.set_xticklabels([integer(s, lang) for s in sizes], rotation=45)
    ax.minorticks_off()


def draw(n: dict, lang: str, path) -> None:
    fig, axes = panels(4, width=3.9)
    bs_label = pick(lang, "batch size", "tamanho do lote")
    xs = _with(n, "cosine_mean")
    axes[0][0].plot(xs, [n[str(b)]["cosine_mean"] for b in xs], marker="o")
    axes[0][0].set(xlabel=bs_label, ylabel=pick(lang, "cosine", "cosseno"), ylim=(0, 1.05),
                   title=pick(lang, "step gradient vs subset gradient",
                              "gradiente do passo vs do subconjunto"))
    xs = _with(n, "step_ms")
    axes[0][1].plot(xs, [n[str(b)]["step_ms"] for b in xs], marker="o", color="C1")
    axes[0][1].set(yscale="log", xlabel=bs_label, ylabel=pick(lang, "ms per step (log scale)",
                                                              "ms por passo (escala log)"),
                   title=pick(lang, "time per step", "tempo por passo"))
    xs = [b for b in xs if n[str(b)].get("epoch_s")]
    axes[0][2].plot(xs, [n[str(b)]["epoch_s"] for b in xs], marker="s", color="C2")
    axes[0][2].set(yscale="log", xlabel=bs_label, ylabel=pick(lang, "s per epoch (log scale)",
                                                              "s por época (escala log)"),
                   title=pick(lang, "time per epoch (validation excluded)",
                              "tempo por época (sem validação)"))
    for i, (key, label) in enumerate((("acc_epochs_pct", pick(lang, "same epochs", "mesmas épocas")),
                                      ("acc_time_pct", pick(lang, "same wall clock", "mesmo tempo")))):
        xs = _with(n, key)
        axes[0][3].plot(xs, [n[str(b)][key] for b in xs], label=label, **style(i))
    axes[0][3].set(xlabel=bs_label, ylabel=pick(lang, "test accuracy (%)", "acurácia de teste (%)"),
                   title=pick(lang, "accuracy", "acurácia"))
    legend(axes[0][3], lang)
    for ax in axes[0]:
        _log2_axis(ax, n["sizes"], lang)
    save(fig, path, lang)


