"""Draw docs/shapeset.png: Shapeset-3x2 images of the validation stream, one row per class.

    python scripts/shapeset_grid.py [--out docs/shapeset.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from initlab import project_root  # noqa: E402
from initlab.data.shapes import CLASSES, SHAPE_NAMES  # noqa: E402
from initlab.data.shapeset import generate  # noqa: E402

PER_ROW = 10


def class_name(counts: tuple[int, ...]) -> str:
    return " + ".join(name for name, k in zip(SHAPE_NAMES, counts) for _ in range(k))


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=project_root() / "docs" / "shapeset.png")
    args = parser.parse_args(argv)
    images, labels = generate(1000, seed=0, split="val", chunk=1000)
    fig, axes = plt.subplots(len(CLASSES), PER_ROW, figsize=(PER_ROW * 0.9, len(CLASSES) * 0.95))
    for counts, label in CLASSES.items():
        picks = (labels == label).nonzero().squeeze(1)[:PER_ROW]
        for j, ax in enumerate(axes[label]):
            ax.imshow(images[picks[j]], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
        axes[label, 0].set_ylabel(f"{label}: {class_name(counts)}", rotation=0, ha="right",
                                  va="center", fontsize=8)
    fig.suptitle("Shapeset-3x2 (data=shapeset): the first validation images of each class",
                 fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
