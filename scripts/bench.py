"""Speed of initlab against hand-written PyTorch, measured as ratios in one process.

    python scripts/bench.py                 # every case, a few minutes on 2 CPU cores
    python scripts/bench.py --quick         # tiny sizes, one round: checks the script runs
    python scripts/bench.py --cases framework  # initlab, its monitors, Lightning vs a raw loop
    python scripts/bench.py --device cuda   # the same cases on the GPU, with its own goals
    python scripts/bench.py --cases whole   # whole train.py processes vs plain_train.py
    python scripts/bench.py --cases shapeset  # Shapeset-3x2 images/s vs a 5x1000 MLP step

Variants of a case are interleaved over several rounds after a warm-up; each figure is the
median, and a spread (max/min - 1) over 10% is flagged. The framework and speedrun cases go
further: each fit is paired, every 20 steps, with as many steps of a raw loop that trains a copy
of the fit's model on the same batches (this machine's speed drifts too much between whole fits
to read a 5% difference), and the two models' weights are compared after. Prints a table and
writes bench.json (with the machine: torch, and on CUDA the card, driver and CUDA version). On CUDA
every timing ends with a synchronize, and the speedrun warms the device up first.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from initlab.bench import run
from initlab.bench.cases import CASES, DEFAULT_CASES
from initlab.bench.common import Settings


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=DEFAULT_CASES)
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per case (3)")
    parser.add_argument("--seeds", type=int, default=5, help="speedrun seeds")
    parser.add_argument("--out", type=Path, default=Path("bench.json"))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where initlab and the raw loops train (cpu)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device cuda: torch {torch.__version__} sees no CUDA GPU "
                     "(torch.cuda.is_available() is False)")
    settings = Settings(quick=args.quick, rounds=args.rounds or (1 if args.quick else 3),
                        seeds=args.seeds, device=args.device)
    return run(args.cases, settings, args.out)


if __name__ == "__main__":
    main()
