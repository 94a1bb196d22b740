"""Lesson 12: data augmentation (noise, skew, both): accuracy on clean and corrupted test sets."""

from __future__ import annotations

from initlab.report.collect import Run
from initlab.report.lessons.common import (
    by,
    fixed,
    legend,
    num,
    ordered,
    outcome,
    panels,
    pct,
    pick,
    save,
    style,
)

TITLE = {"en": "Data augmentation", "pt-BR": "Expansão de dados"}
CLAIM = {"en": "Expanding the data by adding noise or skewing the images makes the model more robust.",
         "pt-BR": "Expandir os dados acrescentando ruído ou inclinando as imagens deixa o modelo "
                  "mais robusto."}
ORDER = ["none", "noise", "skew", "noise_skew"]
KINDS = ("noise", "skew")
NAME = {"none": {"en": "none", "pt-BR": "nenhuma"}, "noise": {"en": "noise", "pt-BR": "ruído"},
        "skew": {"en": "skew", "pt-BR": "inclinação"},
        "noise_skew": {"en": "noise + skew", "pt-BR": "ruído + inclinação"}}


def corrupt_levels(run: Run, kind: str) -> list[list[float]]:
    prefix = f"test_corrupt/{kind}_"
    metrics = (run.result or {}).get("metrics", {})
    return sorted([float(k[len(prefix):-len("/acc")]), 100 * v] for k, v in metrics.items()
                  if k.startswith(prefix) and k.endswith("/acc"))


def measure(runs: list[Run]) -> dict:
    table, shared = by(runs, "augment")
    augs = {}
    for aug in ordered(((a or "none") for a, in table), ORDER):
        run = table.get((aug,)) or table.get((None,))
        augs[aug] = {"clean_pct": outcome(run)["test_acc_pct"], "outcome": outcome(run),
                     **{kind: corrupt_levels(run, kind) for kind in KINDS}}
    levels = {k: sorted({lv for a in augs.values() for lv, _ in a[k]}) for k in KINDS}
    return {"augs": augs, "levels": levels, "shared": shared}


def _at(a: dict, kind: str, level: float) -> float | None:
    return dict((lv, acc) for lv, acc in a[kind]).get(level)


def _name(aug: str, lang: str) -> str:
    return NAME.get(aug, {}).get(lang, aug)


def describe(n: dict, lang: str) -> list[str]:
    augs, out = n["augs"], []
    none = augs.get("none")
    if none is None:
        return out
    units = {"noise": pick(lang, "noise std", "ruído de desvio padrão"),
             "skew": pick(lang, "a shear of", "inclinação de")}
    for kind in KINDS:
        if not n["levels"][kind] or kind not in augs:
            continue
        top = n["levels"][kind][-1]
        base, own = _at(none, kind, top), _at(augs[kind], kind, top)
        both = _at(augs["noise_skew"], kind, top) if "noise_skew" in augs else None
        other = "skew" if kind == "noise" else "noise"
        cross = _at(augs[other], kind, top) if other in augs else None
        level = num(top, lang) + ("°" if kind == "skew" else "")
        if base is None or own is None:
            continue
        text = pick(lang, f"On test images with {units[kind]} {level}: {pct(base, lang)} without "
                          f"augmentation; training with {_name(kind, lang)} "
                          f"{'lifts' if own > base else 'lowers'} it to {pct(own, lang)}",
                    f"Nas imagens de teste com {units[kind]} {level}: {pct(base, lang)} sem expansão "
                    f"de dados; treinar com {_name(kind, lang)} {'eleva' if own > base else 'reduz'} "
                    f"para {pct(own, lang)}")
        if both is not None:
            text += pick(lang, f", both together {'to' if both != own else 'also to'} {pct(both, lang)}",
                         f", as duas juntas para {pct(both, lang)}")
        if cross is not None:
            text += pick(lang, f"; training with {_name(other, lang)} alone "
                               f"{'helps' if cross > base else 'does not help'} here ({pct(cross, lang)})",
                         f"; treinar só com {_name(other, lang)} "
                         f"{'ajuda' if cross > base else 'não ajuda'} aqui ({pct(cross, lang)})")
        out.append(text + ".")
    cleans = {a: v["clean_pct"] for a, v in augs.items() if v["clean_pct"] is not None}
    if len(cleans) >= 2:
        spread = max(cleans.values()) - min(cleans.values())
        listing = ", ".join(f"{_name(a, lang)} {pct(v, lang)}" for a, v in cleans.items())
        out.append(pick(lang, f"On the clean test set all {len(cleans)} end within {fixed(spread, lang)} "
                              f"points of each other "
                              f"({listing}).",
                        f"No conjunto de teste limpo, as {len(cleans)} ficam a até {fixed(spread, lang)} "
                        f"pontos umas das outras "
                        f"({listing})."))
    return out


def table(n: dict, lang: str) -> list[str]:
    kinds = {"noise": pick(lang, "noise", "ruído"), "skew": pick(lang, "skew", "inclinação")}
    head = (pick(lang, "| augmentation | clean | ", "| expansão | limpo | ")
            + " | ".join(f"{kinds[k]} {num(lv, lang)}" for k in KINDS for lv in n["levels"][k]) + " |")
    rows = [head, "|---" * (2 + sum(len(v) for v in n["levels"].values())) + "|"]
    for aug, a in n["augs"].items():
        cells = [pct(_at(a, k, lv), lang) for k in KINDS for lv in n["levels"][k]]
        rows.append(f"| {_name(aug, lang)} | {pct(a['clean_pct'], lang)} | " + " | ".join(cells) + " |")
    return rows


def verdicts(n: dict, lang: str) -> list[tuple[str, str, str]]:
    augs = n["augs"]
    if "none" not in augs:
        return []
    wins, parts = 0, []
    for kind in KINDS:
        if kind not in augs or not n["levels"][kind]:
            continue
        top = n["levels"][kind][-1]
        base, own = _at(augs["none"], kind, top), _at(augs[kind], kind, top)
        if base is None or own is None:
            continue
        wins += own > base
        parts.append(f"{_name(kind, lang)} {num(top, lang)}: {pct(base, lang)} → {pct(own, lang)}")
    if not parts:
        return []
    verdict = "confirmed" if wins == len(parts) else "qualified" if wins else "contradicted"
    return [(CLAIM[lang], verdict, "; ".join(parts))]


def draw(n: dict, lang: str, path) -> None:
    fig, axes = panels(2, width=5.0)
    for col, kind in enumerate(KINDS):
        for i, (aug, a) in enumerate(n["augs"].items()):
            pts = [[0.0, a["clean_pct"]], *a[kind]] if a["clean_pct"] is not None else a[kind]
            if pts:
                axes[0][col].plot(*zip(*pts), label=_name(aug, lang), **style(i, filled=i % 2 == 0))
        axes[0][col].set_xticks([0.0, *n["levels"][kind]])
        axes[0][col].set(ylabel=pick(lang, "test accuracy (%)", "acurácia de teste (%)"))
    axes[0][0].set(xlabel=pick(lang, "noise std of the test images (0: clean)",
                               "desvio do ruído nas imagens de teste (0: limpas)"),
                   title=pick(lang, "Gaussian noise", "ruído gaussiano"))
    axes[0][1].set(xlabel=pick(lang, "shear of the test images, degrees (0: clean)",
                               "inclinação das imagens de teste, graus (0: limpas)"),
                   title=pick(lang, "skew", "inclinação"))
    for ax in axes[0]:
        legend(ax, lang, loc="lower left")
    save(fig, path, lang)
