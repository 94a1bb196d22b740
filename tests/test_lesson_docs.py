"""The generated parts of the lesson docs: blocks replaced between their markers, the verdict
table with a row per judged claim, in both languages."""

from __future__ import annotations

import pytest

from initlab.report.lesson_docs import replace_block, times_table, verdict_table
from initlab.report.lessons import MODULES
from tests.test_lesson_describe import EXAMPLES


def test_a_block_is_replaced_between_its_markers_and_nothing_else_moves():
    text = "intro\n<!-- generated:a -->\nold\n<!-- /generated:a -->\noutro\n"
    assert replace_block(text, "a", "new\nlines") == \
        "intro\n<!-- generated:a -->\nnew\nlines\n<!-- /generated:a -->\noutro\n"
    with pytest.raises(ValueError, match="no <!-- generated:b -->"):
        replace_block(text, "b", "x")


@pytest.mark.parametrize("lang,words", [("en", {"confirmed", "qualified", "contradicted"}),
                                        ("pt-BR", {"confirmada", "com ressalvas", "contrariada"})])
def test_the_verdict_table_judges_every_topic_in_its_language(lang, words):
    numbers = dict(zip(MODULES, EXAMPLES))
    rows = verdict_table(numbers, lang)[2:]
    assert len(rows) >= 12
    sections = {row.rsplit("[", 1)[1].split("]")[0] for row in rows}
    assert sections == {str(i) for i in range(1, 13)}  # every lesson has a row
    used = {row.split("**")[1] for row in rows}
    assert used <= words and used


def test_the_times_table_sums_the_lessons_it_has():
    rows = times_table({"symmetry": 30.0, "vanishing": 90.0}, "pt-BR")
    assert rows[-1] == "| as doze | | 2,0 min |" and "0,5 min" in rows[2]
