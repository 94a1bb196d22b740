"""Regenerate the lesson docs (docs/lesson.md, docs/aula.pt-BR.md and their figures) from the
twelve lesson sweeps under one directory, one sub-directory per topic, plus an optional
times.tsv (topic, wall seconds of its multirun, exit code):

    python scripts/lesson_docs.py outputs/lessons-<date>
"""

import argparse
from pathlib import Path

from initlab.report.lesson_docs import build


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweeps", help="a directory holding <topic>/ sweeps (and times.tsv)")
    parser.add_argument("--docs", default=str(Path(__file__).resolve().parents[1] / "docs"))
    args = parser.parse_args(argv)
    numbers = build(Path(args.sweeps), Path(args.docs))
    print(f"{len(numbers)} lesson(s) written into {args.docs}")


if __name__ == "__main__":
    main()
