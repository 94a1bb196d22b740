"""The lesson experiments (experiment=lesson/<topic>). Each topic is a module with four pure
steps: ``measure`` (runs -> numbers), ``describe`` and ``table`` (numbers -> sentences and a
table in one language), ``draw`` (numbers -> a figure in one language) and ``verdicts``
(numbers -> the course's claims judged). Every comparative word a sentence uses is chosen by a
comparison of the numbers it cites.

A sweep is a lesson when its runs' config says ``lesson.topic``; ``write_report`` then puts the
lesson first in report.md (English) and writes ``lesson.json`` (numbers, and the sentences,
table and verdicts in English and Brazilian Portuguese) and one figure per language next to it.
Its accuracies are percentages and their names say so (``test_acc_pct``); result.json's are
fractions (``best_val_acc``, ``metrics["test/acc"]``).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

from initlab.report.collect import Run
from initlab.report.lessons import (
    augmentation,
    batch_size,
    dropout,
    exploding,
    fitting,
    l1_l2,
    learning_rate,
    naive_init,
    optimizers,
    symmetry,
    vanishing,
    xavier_variants,
)
from initlab.report.lessons.common import LANGS, choice
from initlab.utils import atomic_write

MODULES: dict[str, ModuleType] = {
    "symmetry": symmetry, "naive_init": naive_init, "xavier_variants": xavier_variants,
    "learning_rate": learning_rate, "batch_size": batch_size, "optimizers": optimizers,
    "vanishing": vanishing, "exploding": exploding, "fitting": fitting, "l1_l2": l1_l2,
    "dropout": dropout, "augmentation": augmentation,
}
# topic -> (number in the lesson, English title, the course's claim in English)
LESSONS = {topic: (i, m.TITLE["en"], m.CLAIM["en"])
           for i, (topic, m) in enumerate(MODULES.items(), start=1)}
VERDICT = {"confirmed": {"en": "confirmed", "pt-BR": "confirmada"},
           "qualified": {"en": "qualified", "pt-BR": "com ressalvas"},
           "contradicted": {"en": "contradicted", "pt-BR": "contrariada"}}

__all__ = ["LESSONS", "MODULES", "VERDICT", "choice", "figure_name", "lesson_section",
           "lesson_topic", "render"]


def lesson_topic(runs: list[Run]) -> str | None:
    """The sweep's lesson topic, or None when its runs are not (all) one lesson."""
    topics = {(r.config.get("lesson") or {}).get("topic") for r in runs}
    if len(topics) != 1:
        return None
    topic = topics.pop()
    return topic if topic in MODULES else None


def figure_name(topic: str, lang: str) -> str:
    return f"lesson_{topic}.png" if lang == "en" else f"lesson_{topic}.{lang}.png"


def render(topic: str, numbers: dict, lang: str, root: Path | None = None) -> dict:
    """The lesson in one language from its numbers: sentences, table and verdicts, and its
    figure when ``root`` is given."""
    module = MODULES[topic]
    if root is not None:
        module.draw(numbers, lang, root / figure_name(topic, lang))
    return {"title": module.TITLE[lang], "claim": module.CLAIM[lang],
            "sentences": module.describe(numbers, lang), "table": module.table(numbers, lang),
            "verdicts": [{"claim": claim, "verdict": verdict, "word": VERDICT[verdict][lang],
                          "number": number} for claim, verdict, number
                         in module.verdicts(numbers, lang)]}


def lesson_section(root: str | Path, runs: list[Run]) -> list[str]:
    """report.md lines for the sweep's lesson (empty when it is not a lesson); writes its
    figures and ``lesson.json``."""
    topic = lesson_topic(runs)
    if topic is None:
        return []
    root = Path(root)
    number, title, claim = LESSONS[topic]
    numbers = MODULES[topic].measure(runs)
    shared = numbers.pop("shared", [])
    text = {lang: render(topic, numbers, lang, root) for lang in LANGS}
    finished = sum(r.result is not None for r in runs)
    record = {"topic": topic, "number": number, "title": title, "claim": claim,
              "runs": len(runs), "finished": finished, "sentences": text["en"]["sentences"],
              "figure": figure_name(topic, "en"),
              "figures": {lang: figure_name(topic, lang) for lang in LANGS},
              "text": text, "numbers": numbers, "shared_configurations": shared}
    atomic_write(root / "lesson.json", json.dumps(record, indent=2, default=str).encode())
    lines = [f"## Lesson {number}: {title}", "", f"*The course says:* {claim}", "",
             "*Measured here:* " + " ".join(text["en"]["sentences"]), ""]
    if finished < len(runs):
        lines += [f"(from {finished} of {len(runs)} runs: the others have no result.json)", ""]
    if shared:
        lines += [f"**Note:** several runs share the configuration(s) {', '.join(shared)} (another "
                  "swept setting or seed): the lesson shows the first of each, in job order.", ""]
    lines += [f"![{title}]({figure_name(topic, 'en')})", ""]
    lines += text["en"]["table"] + [""]
    lines += ["| the course's claim | verdict | deciding number |", "|---|---|---|"]
    lines += [f"| {v['claim']} | {v['word']} | {v['number']} |" for v in text["en"]["verdicts"]]
    return lines + [""]
