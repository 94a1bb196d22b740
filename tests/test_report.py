"""The report reads a real (tiny) sweep back: rows, numbers and statuses come from the runs."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys

import pytest

from initlab.report import collect_runs, write_report
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    from tests.helpers import write_tiny_mnist

    root = tmp_path_factory.mktemp("report")
    write_tiny_mnist(root / "data")
    sweep = root / "sweep"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/train.py"), "-m", "init=zeros,xavier",
         "optim.lr=1e12,0.01", "seed=1,2", "optim=sgd", "scheduler=none",
         f"hydra.sweep.dir={sweep}", f"data.data_dir={root / 'data'}", "data.verify=false",
         "data.sources=[local]", "data.train_samples=96", "data.batch_size=32",
         "model.channels=[4,8]", "model.hidden=16", "trainer.accelerator=cpu",
         "trainer.max_epochs=3", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
         "status.check_every_n_steps=1", "callbacks.probe.every_n_steps=2", "checkpoint=null",
         "robustness=null"],
        capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep


def test_report_rows_and_numbers_come_from_the_runs(sweep):
    runs = collect_runs(sweep)
    assert len(runs) == 8
    report = write_report(sweep, runs).read_text()
    ok_runs = [r for r in runs if r.init == "xavier" and r.config["optim"]["lr"] == 0.01]
    errors = [100 * (1 - r.result["metrics"]["test/acc"]) for r in ok_runs]
    label = ok_runs[0].label
    row = next(line for line in report.splitlines() if line.startswith(f"| {label} |"))
    assert f"{statistics.mean(errors):.2f} ± {statistics.stdev(errors):.2f}" in row
    assert "| 2 |" in row
    table = report.split("## Test error per configuration")[1].split("##")[0].splitlines()
    assert len([line for line in table if line.startswith("| init=")]) == 4
    diverged_row = next(line for line in table
                        if line.startswith("| init=xavier optim.lr=1000000000000.0 |"))
    assert "diverged: 2" in diverged_row and "some runs diverged" in diverged_row
    stalled = [line for line in table if line.startswith("| init=zeros")]
    assert len(stalled) == 2 and all("stalled: 2" in line for line in stalled)


def test_at_init_table_reads_init_stats(sweep):
    runs = collect_runs(sweep)
    report = (sweep / "report.md").read_text() if (sweep / "report.md").exists() \
        else write_report(sweep, runs).read_text()
    first_xavier = next(r for r in runs if r.init == "xavier")
    value = first_xavier.init_stats["layers"]["conv1"]["activation_std"]
    section = report.split("**activation std at initialization**")[1].split("**")[0]
    conv1 = next(line for line in section.splitlines() if line.startswith("| conv1 |"))
    assert f"{value:.4g}" in conv1


def test_figures_exist_and_are_linked(sweep):
    runs = collect_runs(sweep)
    report = write_report(sweep, runs).read_text()
    linked = re.findall(r"\]\(([^)]+\.png)\)", report)
    for name in ("activation_std.png", "weight_grad_std.png", "hist_activation_init.png",
                 "error_curves.png"):
        assert name in linked
    assert sum(name.startswith("grad_norm_") for name in linked) == 8  # one per run
    for name in linked:
        assert (sweep / name).stat().st_size > 1000


def test_partial_sweep_is_marked(sweep, tmp_path):
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(sweep, partial)
    job = sorted(p for p in partial.iterdir() if p.is_dir() and (p / "result.json").exists())[0]
    (job / "result.json").unlink()
    report = write_report(partial, collect_runs(partial)).read_text()
    assert "Partial results:** 1 of 8 runs" in report
    assert "running: 1" in report


def test_single_run_report(sweep):
    job = sorted(p for p in sweep.iterdir() if p.is_dir())[0]
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/report.py"), str(job)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "1 run(s)" in proc.stdout and (job / "report.md").exists()
    result = json.loads((job / "result.json").read_text())
    assert result["status"] in (job / "report.md").read_text()


def test_report_on_missing_dir_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no runs under"):
        collect_runs(tmp_path)
