"""Run the chosen cases on synthetic MNIST (real MNIST for the speedrun and the whole-process
cases, as a user runs them), print the table and write the figures and the machine to a JSON
file."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from initlab.bench.cases import CASES
from initlab.bench.common import ROOT, Settings, machine, synthetic_mnist
from initlab.bench.report import print_table
from initlab.utils import atomic_write, retain_freed_memory


def run(cases: list[str], settings: Settings, out: Path) -> dict:
    """The figures of ``cases`` (names in :data:`~initlab.bench.cases.CASES`), with the machine
    under ``"machine"``; printed as a table and written to ``out``."""
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        raise ValueError(f"unknown bench case(s) {unknown}: choose from {sorted(CASES)}")
    retain_freed_memory()  # as initlab.train.run does: for the raw loops too
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthetic = synthetic_mnist(tmp / "data", 6_000 if settings.quick else 60_000, 1_000)
        for case in cases:
            data_dir = synthetic
            if case in ("speedrun", "whole", "monitors"):
                data_dir = tmp / "data" if settings.quick else ROOT / "data"
            print(f"[bench] {case} ...", flush=True)
            results[case] = CASES[case](settings, data_dir, tmp / "out")
    results["machine"] = {**machine(settings.device), "quick": settings.quick}
    print_table({k: v for k, v in results.items() if k != "machine"})
    atomic_write(out, json.dumps(results, indent=2).encode())
    print(f"\nwrote {out}")
    return results
