"""The lesson docs (docs/lesson.md, docs/aula.pt-BR.md) from twelve lesson sweeps: the verdict
table, the measured time of each lesson and every lesson's section are generated between
``<!-- generated:<block> -->`` and ``<!-- /generated:<block> -->`` markers from the sweeps'
numbers; the prose around them is the docs' own. Figures are copied to docs/lesson/<topic>.png
(English) and docs/lesson/pt-BR/<topic>.png."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from initlab.report.collect import collect_runs
from initlab.report.lessons import MODULES, VERDICT, figure_name, lesson_section, render
from initlab.report.lessons.common import fixed, pick
from initlab.report.lessons.exploding import rarity
from initlab.utils import atomic_write

DOCS = {"en": "lesson.md", "pt-BR": "aula.pt-BR.md"}


def measure_all(sweeps: Path) -> dict[str, dict]:
    """Each topic's numbers, measured from its sweep (sweeps/<topic>); writes each sweep's
    lesson.json and figures as the report does."""
    numbers = {}
    for topic, module in MODULES.items():
        root = sweeps / topic
        if not root.is_dir():
            continue
        runs = collect_runs(root)
        lesson_section(root, runs)
        numbers[topic] = module.measure(runs)
        numbers[topic].pop("shared", None)
    return numbers


def read_times(sweeps: Path) -> dict[str, float]:
    """times.tsv: topic, wall seconds of its multirun, exit code (written by whoever ran them)."""
    path = sweeps / "times.tsv"
    if not path.exists():
        return {}
    rows = [line.split("\t") for line in path.read_text().splitlines() if "\t" in line]
    return {row[0]: float(row[1]) for row in rows if len(row) >= 3 and row[2].strip() == "0"}


def replace_block(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- generated:{name} -->\n).*?(<!-- /generated:{name} -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"no <!-- generated:{name} --> block")
    return pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)


def verdict_table(numbers: dict[str, dict], lang: str) -> list[str]:
    rows = [pick(lang, "| # | the course's claim | verdict | the deciding number | section |",
                 "| # | afirmação da aula | veredito | o número que decide | seção "
                 "|"), "|---|---|---|---|---|"]
    count = 0
    for i, (topic, module) in enumerate(MODULES.items(), start=1):
        if topic not in numbers:
            continue
        text = render(topic, numbers[topic], lang)
        verdicts = text["verdicts"]
        if topic == "exploding" and (extra := rarity(numbers, lang)):
            claim, verdict, number = extra[1]
            verdicts = [*verdicts, {"claim": claim, "word": VERDICT[verdict][lang], "number": number}]
        anchor = _anchor(f"{i}. {module.TITLE[lang]}")
        for v in verdicts:
            count += 1
            rows.append(f"| {count} | {v['claim']} | **{v['word']}** | {v['number']} "
                        f"| [{i}](#{anchor}) |")
    return rows


def _anchor(title: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", title.lower(), flags=re.U)
    return text.replace(" ", "-")


def times_table(times: dict[str, float], lang: str, runs: dict[str, int] | None = None) -> list[str]:
    rows = [pick(lang, "| lesson | runs | wall time of the multirun |",
                 "| lição | execuções | tempo de relógio do multirun |"), "|---|---|---|"]
    total = 0.0
    for i, (topic, module) in enumerate(MODULES.items(), start=1):
        if topic in times:
            total += times[topic]
            rows.append(f"| {i}. {module.TITLE[lang]} (`lesson/{topic}`) | {(runs or {}).get(topic, '-')} "
                        f"| {fixed(times[topic] / 60, lang)} min |")
    rows.append(pick(lang, f"| all twelve | | {fixed(total / 60, lang)} min |",
                     f"| as doze | | {fixed(total / 60, lang)} min |"))
    return rows


def sections(numbers: dict[str, dict], sweeps: Path, docs: Path, lang: str) -> list[str]:
    out = []
    for i, (topic, module) in enumerate(MODULES.items(), start=1):
        if topic not in numbers:
            continue
        text = render(topic, numbers[topic], lang)
        figure = f"lesson/{topic}.png" if lang == "en" else f"lesson/pt-BR/{topic}.png"
        out += [f"## {i}. {module.TITLE[lang]}", "", f"> {module.CLAIM[lang]}", "",
                "```", f"python scripts/train.py -m experiment=lesson/{topic}", "```", "",
                SETUP[topic][lang], "", f"![{module.TITLE[lang]}]({figure})", "",
                pick(lang, "**Measured:** ", "**Medido:** ") + " ".join(text["sentences"]), ""]
        if topic == "exploding" and (extra := rarity(numbers, lang)):
            out += [extra[0], ""]
        out += text["table"] + [""]
        out += [pick(lang, "**Verdicts:**", "**Vereditos:**"), ""]
        out += [f"- {v['claim'].rstrip('.')} — **{v['word']}** ({v['number']})." for v in text["verdicts"]]
        out += [""]
    return out


def copy_figures(sweeps: Path, docs: Path, topics) -> None:
    (docs / "lesson" / "pt-BR").mkdir(parents=True, exist_ok=True)
    for topic in topics:
        shutil.copyfile(sweeps / topic / figure_name(topic, "en"), docs / "lesson" / f"{topic}.png")
        shutil.copyfile(sweeps / topic / figure_name(topic, "pt-BR"),
                        docs / "lesson" / "pt-BR" / f"{topic}.png")


def build(sweeps: Path, docs: Path) -> dict[str, dict]:
    numbers = measure_all(sweeps)
    runs = {topic: len([p for p in (sweeps / topic).iterdir() if p.is_dir() and p.name.isdigit()])
            for topic in numbers}
    times = read_times(sweeps)
    copy_figures(sweeps, docs, numbers)
    for lang, name in DOCS.items():
        path = docs / name
        text = path.read_text()
        text = replace_block(text, "verdicts", "\n".join(verdict_table(numbers, lang)))
        text = replace_block(text, "times", "\n".join(times_table(times, lang, runs)))
        text = replace_block(text, "lessons", "\n".join(sections(numbers, sweeps, docs, lang)))
        atomic_write(path, text.encode())
    return numbers


# What each lesson runs: the config, in words (conf/experiment/lesson/<topic>.yaml).
SETUP = {
    "symmetry": {
        "en": "The 3 x 256 tanh MLP under `init=zeros`, `init=constant` (every weight 0.01) and "
              "`init=xavier`, dropout off (its random masks would break the symmetry by chance), "
              "SGD at 0.05 for 2 epochs.",
        "pt-BR": "O MLP tanh de 3 camadas de 256 unidades com `init=zeros`, `init=constant` (todos "
                 "os pesos 0,01) e `init=xavier`, sem abandono (as máscaras aleatórias quebrariam a "
                 "simetria por acaso), SGD com taxa 0,05 por 2 épocas."},
    "naive_init": {
        "en": "A 5 x 256 MLP with tanh, sigmoid and ReLU, each under U[-1, 1] (`init=uniform`), "
              "N(0, 1) (`init=normal`) and `init=xavier`, SGD at 0.05 for 2 epochs; the probe "
              "measures every layer at init and every 20 steps.",
        "pt-BR": "Um MLP de 5 camadas de 256 unidades com tanh, sigmoide e ReLU, cada uma com "
                 "U[-1, 1] (`init=uniform`), N(0, 1) (`init=normal`) e `init=xavier`, SGD com "
                 "taxa 0,05 por 2 épocas; a sonda mede cada camada no início e a cada 20 passos."},
    "xavier_variants": {
        "en": "A 10-layer MLP with tanh, ReLU and no activation (linear), under `init=lecun` "
              "(1/n_in), `init=xavier` (2/(n_in + n_out)) and `init=he` (2/n_in), SGD at 0.01 for "
              "one epoch of the subset; two arms: every layer 256 wide (`+arm/xavier_variants="
              "equal`), and widths shrinking by √2 a layer from 512 to 23 (`funnel`), where "
              "n_in ≠ n_out tells the variances apart.",
        "pt-BR": "Um MLP de 10 camadas com tanh, ReLU e sem ativação (linear), com `init=lecun` "
                 "(1/n_in), `init=xavier` (2/(n_in + n_out)) e `init=he` (2/n_in), SGD com taxa "
                 "0,01 por uma época do subconjunto; dois braços: todas as camadas com 256 "
                 "unidades (`+arm/xavier_variants=equal`) e larguras que encolhem √2 por camada, de "
                 "512 a 23 (`funnel`), onde n_in ≠ n_out separa as variâncias."},
    "learning_rate": {
        "en": "The 3 x 256 tanh MLP with plain SGD at 1e-4, 1e-3, 0.01, 0.1, 1 and 10 for one "
              "epoch of the subset; every run first does Lightning's learning-rate range test "
              "(`+tune=lr_find`, not applied to the run).",
        "pt-BR": "O MLP tanh de 3 camadas de 256 unidades com SGD simples e taxas 1e-4, 1e-3, "
                 "0,01, 0,1, 1 e 10 por uma época do subconjunto; antes, cada execução faz o teste "
                 "de faixa de taxas do Lightning (`+tune=lr_find`, sem aplicá-lo)."},
    "batch_size": {
        "en": "The 3 x 256 tanh MLP with SGD at 0.05 and batch sizes 1 to 4,096, under two budgets "
              "(arms): the same 2 epochs, and the same 10 s of fit (`trainer.max_time`). The "
              "gradient's noise: the cosine between the step's gradient and the gradient of the "
              "mean loss on a fixed 8,192-example training subset, every 2,500 examples seen.",
        "pt-BR": "O MLP tanh de 3 camadas de 256 unidades com SGD, taxa 0,05 e tamanhos de lote "
                 "de 1 a 4.096, com dois orçamentos (braços): as mesmas 2 épocas e os mesmos 10 s "
                 "de treino (`trainer.max_time`). O ruído do gradiente: o cosseno entre o "
                 "gradiente do passo e o gradiente da perda média num subconjunto fixo de 8.192 "
                 "exemplos de treino, a cada 2.500 exemplos vistos."},
    "optimizers": {
        "en": "The 3 x 256 tanh MLP for 2 epochs with `optim=sgd`, `momentum` (0.9, Nesterov), "
              "`adagrad`, `rmsprop` and `adam`, each at 0.001, 0.01 and 0.1; each optimizer's best "
              "rate by validation accuracy is drawn.",
        "pt-BR": "O MLP tanh de 3 camadas de 256 unidades por 2 épocas com `optim=sgd`, `momentum` "
                 "(0,9, Nesterov), `adagrad`, `rmsprop` e `adam`, cada um com taxas 0,001, 0,01 e "
                 "0,1; a figura mostra cada otimizador na sua melhor taxa pela validação."},
    "vanishing": {
        "en": "MLPs of width 128 and depth 2, 5, 10 and 20 with sigmoid and tanh, under "
              "`init=standard` (U[±1/√n_in]) and `init=xavier`, with and without "
              "`model.batchnorm=true`, 150 SGD steps at 0.05.",
        "pt-BR": "MLPs de largura 128 e profundidade 2, 5, 10 e 20 com sigmoide e tanh, com "
                 "`init=standard` (U[±1/√n_in]) e `init=xavier`, com e sem "
                 "`model.batchnorm=true` (normalização em lote), 150 passos de SGD com taxa 0,05."},
    "exploding": {
        "en": "A 10 x 256 ReLU MLP, SGD at 0.05: He's draw with gain 2 instead of √2 "
              "(Var(W) = 4/n_in: each layer doubles the variance), and three cures, each with "
              "that same too-large draw except He's: `init=he`, gradient clipping "
              "(`trainer.gradient_clip_val=1.0`) and batch norm (`model.batchnorm=true`).",
        "pt-BR": "Um MLP ReLU de 10 camadas de 256 unidades, SGD com taxa 0,05: o sorteio de He "
                 "com ganho 2 em vez de √2 (Var(W) = 4/n_in: cada camada dobra a variância) e três "
                 "remédios, cada um com o mesmo sorteio grande demais, exceto o de He: `init=he`, "
                 "corte do gradiente (`trainer.gradient_clip_val=1.0`) e normalização em lote "
                 "(`model.batchnorm=true`)."},
    "fitting": {
        "en": "Three arms (`conf/arm/fitting/`, also `experiment=underfit|overfit|regularized` on "
              "their own): the CNN shrunk to 2-2-4 units for one epoch of the whole training set "
              "(underfit); the default CNN on 1,000 examples for 40 epochs with Adam and no "
              "regularization (overfit); the same with dropout 0.5, `l2=1e-4` and noise + skew "
              "augmentation (regularized).",
        "pt-BR": "Três braços (`conf/arm/fitting/`, também `experiment=underfit|overfit|regularized` "
                 "sozinhos): a CNN reduzida a 2-2-4 unidades por uma época do conjunto de treino "
                 "inteiro (sub-ajuste); a CNN padrão com 1.000 exemplos por 40 épocas, com Adam e "
                 "sem regularização (sobreajuste); a mesma com abandono 0,5, `l2=1e-4` e expansão "
                 "de dados com ruído e inclinação (regularizado)."},
    "l1_l2": {
        "en": "The 3 x 256 tanh MLP with Adam (0.001) for 3 epochs, `l1` and `l2` each at 0, 1e-4 "
              "and 1e-3 (coefficients of sum|W| and sum W² added to the loss, Conv/Linear "
              "weights only).",
        "pt-BR": "O MLP tanh de 3 camadas de 256 unidades com Adam (0,001) por 3 épocas, `l1` e "
                 "`l2` com 0, 1e-4 e 1e-3 cada (coeficientes de soma|W| e soma W² somados à "
                 "perda, só nos pesos das camadas Conv/Linear; em Keras, `kernel_regularizer`)."},
    "dropout": {
        "en": "The overfit arm of lesson 9 (default CNN, 1,000 training examples, Adam, 40 epochs, "
              "no other regularization) with `model.dropout` 0, 0.25, 0.5 and 0.7 (dropout acts "
              "on the CNN's hidden fully connected layer, 256 units); after training, each of "
              "those 256 units is removed in turn (`ablation.json`).",
        "pt-BR": "O braço de sobreajuste da lição 9 (CNN padrão, 1.000 exemplos de treino, Adam, 40 "
                 "épocas, sem outra regularização) com `model.dropout` 0, 0,25, 0,5 e 0,7 (o "
                 "abandono age na camada oculta totalmente conectada da CNN, de 256 unidades); "
                 "depois do treino, cada uma dessas 256 unidades é removida por vez (`ablation.json`)."},
    "augmentation": {
        "en": "The default CNN with Adam (0.003, no schedule) for 2 epochs of the 10,000-example "
              "subset, trained with `augment=none`, `noise` (std 0.2), `skew` (20 degrees) and "
              "`noise_skew`, tested on the clean test set and on corrupted copies (noise std "
              "0.1-0.5, shear 10-45 degrees).",
        "pt-BR": "A CNN padrão com Adam (0,003, sem agenda de taxa) por 2 épocas do subconjunto de "
                 "10.000 exemplos, treinada com `augment=none`, `noise` (desvio 0,2), `skew` (20 "
                 "graus) e `noise_skew`, testada no conjunto de teste limpo e em cópias corrompidas "
                 "(ruído de desvio 0,1 a 0,5, inclinação de 10 a 45 graus)."},
}

