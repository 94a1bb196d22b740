"""Table 1 at three budgets: the budget configs, the learning-rate pilots, the test-error
curve, and the report's Table 1 (both columns, the paper beside it, its words at both sides of
each threshold) and training-time figures, from real tiny runs."""

from __future__ import annotations

import json
import re
import statistics

import pytest
import torch
from hydra.errors import ConfigCompositionException

from initlab.budget import job_count, updates_per_job
from initlab.pilots import best_lr
from initlab.report import Run, collect_runs, write_report
from initlab.report.collect import PAPER_TABLE1
from initlab.report.table1 import (
    AGREE_REL,
    AGREE_STDS,
    PAPER_UPDATES,
    Cell,
    pair_verdict,
    paper_verdict,
)
from initlab.train import build, run
from tests.helpers import compose_config, run_script

EPS = 1e-6


# ---- budgets ----

@pytest.mark.parametrize("data", ["mnist", "shapeset"])
def test_budgets_compose_with_their_own_keys(data):
    quick = compose_config("experiment=glorot_table1", f"data={data}", hydra=True)
    cpu = compose_config("experiment=glorot_table1", f"data={data}", "budget=cpu", hydra=True)
    paper = compose_config("experiment=glorot_table1", f"data={data}", "budget=paper", hydra=True)
    assert (quick.budget, cpu.budget, paper.budget) == ("quick", "cpu", "paper")
    assert quick.pilots is None and paper.pilots is None and len(cpu.pilots.lrs) >= 2
    assert paper.trainer.max_steps == PAPER_UPDATES
    assert quick.trainer.max_steps < cpu.trainer.max_steps < paper.trainer.max_steps
    # the paper's sweep has the rate as a dimension; the cpu budget's pilots choose it
    assert "optim.lr" in paper.hydra.sweeper.params and "optim.lr" not in cpu.hydra.sweeper.params
    for cfg in (quick, cpu, paper):
        assert cfg.model.depth == 5 and cfg.model.width == 1000 and cfg.data.batch_size == 10


def test_a_bad_budget_name_is_refused_before_training_naming_the_allowed_ones():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config("experiment=glorot_table1", "budget=hour", hydra=True)
    text = str(err.value)
    assert "budget/hour" in text
    for name in ("quick", "cpu", "paper"):
        assert name in text


def test_job_count_and_updates_follow_the_sweep():
    paper = compose_config("experiment=glorot_table1", "budget=paper", hydra=True)
    params = paper.hydra.sweeper.params
    assert job_count(params, []) == 5 * 3 * 1
    assert job_count(params, ["seed=1,2", "data=shapeset"]) == 5 * 3 * 2
    assert job_count(params, ["optim.lr=0.1", "+table1_row=tanh"]) == 1
    cpu = compose_config("experiment=glorot_table1", "budget=cpu", hydra=True)
    assert updates_per_job(cpu) == cpu.trainer.max_steps + len(cpu.pilots.lrs) * cpu.pilots.steps


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_the_estimate_prints_before_the_first_job(tmp_path):
    proc = run_script("train.py", "-m", "experiment=glorot_table1", "data=shapeset",
                      "budget=paper", "+table1_row=tanh", "optim.lr=0.1",
                      f"hydra.sweep.dir={tmp_path}", "seed=-1", timeout=300)
    out = proc.stdout
    assert "budget=paper, data=shapeset: 1 job(s) x " in out
    assert "2-core CPU" in out and "one GPU" in out
    # the estimate comes first: the job refuses its bad seed only after
    assert out.index("budget=paper") < (out + proc.stderr).index("Launching")


# ---- pilots ----

def test_best_lr_never_picks_a_diverged_pilot_and_breaks_ties_low():
    assert best_lr([0.01, 0.1, 1.0], [0.5, 0.7, None]) == 0.1
    assert best_lr([0.01, 0.1], [float("nan"), 0.2]) == 0.1
    assert best_lr([0.1, 0.01], [0.6, 0.6]) == 0.01
    assert best_lr([0.01, 0.1], [None, None]) == 0.01


def test_pilots_measure_what_a_short_run_at_each_rate_measures(make_cfg, tmp_path):
    """Each pilot's validation accuracy equals a real run's at that rate and step count (same
    initial weights, same batches); the run then trains the best rate, as a run given that
    rate directly does."""
    common = ["model=mlp", "optim=sgd", "scheduler=none", "trainer.max_epochs=-1",
              "trainer.val_check_interval=null", "seed=3"]
    piloted = tmp_path / "piloted"
    run(make_cfg(*common, "pilots={lrs:[0.001,0.3],steps:2}", "trainer.max_steps=4",
                 f"output_dir={piloted}"))
    record = json.loads((piloted / "pilots.json").read_text())
    assert record["lrs"] == [0.001, 0.3] and record["steps"] == 2
    for lr, acc in zip(record["lrs"], record["val_acc"]):
        short = tmp_path / f"short_{lr}"
        run(make_cfg(*common, f"optim.lr={lr}", "trainer.max_steps=2", "test=false",
                     f"output_dir={short}"))
        assert json.loads((short / "result.json").read_text())["metrics"]["val/acc"] == \
            pytest.approx(acc, abs=1e-6)
    assert record["chosen"] == best_lr(record["lrs"], record["val_acc"])
    direct = tmp_path / "direct"
    run(make_cfg(*common, f"optim.lr={record['chosen']}", "trainer.max_steps=4",
                 f"output_dir={direct}"))
    a, b = (json.loads((d / "result.json").read_text())["metrics"] for d in (piloted, direct))
    for key in ("test/acc", "test/loss", "val/acc"):
        assert a[key] == pytest.approx(b[key], abs=1e-6), key


def test_a_relaunched_run_takes_its_folders_pilots_and_a_new_grid_runs_them(make_cfg, tmp_path):
    from initlab.pilots import run_pilots

    out = tmp_path / "job"
    cfg = make_cfg("model=mlp", "optim=sgd", "scheduler=none",
                   "pilots={lrs:[0.01,0.3],steps:1}", f"output_dir={out}")
    datamodule, module, _ = build(cfg)
    out.mkdir(parents=True, exist_ok=True)
    earlier = {"lrs": [0.01, 0.3], "steps": 1, "val_acc": [0.5, 0.25], "val_loss": [1.0, 2.0],
               "chosen": 0.3}  # not what best_lr would choose: proof the file was taken
    (out / "pilots.json").write_text(json.dumps(earlier))
    assert run_pilots(cfg, module, datamodule) == earlier
    assert module.optimizer_factory.keywords["lr"] == 0.3 and cfg.optim.lr == 0.3
    cfg.pilots.lrs = [0.01, 0.1]  # another grid: the pilots run again and the file is replaced
    record = run_pilots(cfg, module, datamodule)
    assert record["lrs"] == [0.01, 0.1] and len(record["val_acc"]) == 2
    assert json.loads((out / "pilots.json").read_text()) == record
    assert module.optimizer_factory.keywords["lr"] == record["chosen"] == cfg.optim.lr


@pytest.mark.parametrize("pilots, message", [
    ("{lrs:[],steps:2}", "pilots.lrs=[] is invalid"),
    ("{lrs:[0.1,-1],steps:2}", "pilots.lrs=[0.1, -1] is invalid"),
    ("{lrs:[0.1],steps:0}", "pilots.steps=0 is invalid"),
    ("{rates:[0.1],lrs:[0.1],steps:2}", "pilots has unknown keys ['rates']; allowed: ['lrs', "
                                       "'steps']"),
])
def test_bad_pilots_are_refused_before_training(make_cfg, pilots, message):
    from initlab.train import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        build(make_cfg("model=mlp", f"pilots={pilots}"))


# ---- the test-error curve ----

def test_test_error_curve_is_the_error_of_the_model_on_the_whole_test_set(make_cfg, tmp_path):
    """Oracle: at the last validation (the end of training) the logged error is the plain
    torch error of the final model on every test example."""
    out = tmp_path / "curve"
    cfg = make_cfg("model=mlp", "+callbacks.curve._target_=initlab.monitors.TestErrorCurve",
                   "+callbacks.curve.chunk_size=7", "logger=tensorboard", "test=false",
                   "trainer.max_epochs=-1", "trainer.max_steps=5",
                   "trainer.val_check_interval=2", "+trainer.check_val_every_n_epoch=null",
                   f"output_dir={out}")
    datamodule, module, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    trainer.logger.finalize("success")
    points = Run(out, {}, [], None, None).scalars("test_curve/error")
    assert [s for s, _ in points] == [2, 4, 5]  # every validation, the one at max_steps too
    x, y = datamodule.splits["test"]
    model = module.model.eval()
    with torch.no_grad():
        logits = model(datamodule.standardize(x.unsqueeze(1).float() / 255))
    expected = 100.0 * (logits.argmax(1) != y).double().mean().item()
    assert len(y) == 200 and points[-1][1] == pytest.approx(expected, abs=1e-4)


# ---- the report's words, at both sides of each threshold ----

def test_agreement_threshold_relative_to_the_paper():
    paper, tol = 16.0, AGREE_REL * 16.0
    assert paper_verdict(paper + tol - EPS, 0.0, paper, 1000).startswith("agrees")
    assert paper_verdict(paper - tol + EPS, 0.0, paper, 1000).startswith("agrees")
    above = paper_verdict(paper + tol + 0.01, 0.0, paper, 1000)
    assert above.startswith(f"is {tol + 0.01:.2f} points above") and "stops short" in above
    assert paper_verdict(paper - tol - 0.01, 0.0, paper, 1000).startswith(
        f"is {tol + 0.01:.2f} points below")


def test_agreement_threshold_widens_with_the_seeds_spread():
    paper, std = 1.64, 0.5  # 2 std = 1.0 > 10% of 1.64
    assert paper_verdict(paper + AGREE_STDS * std - EPS, std, paper, 1000).startswith("agrees")
    assert paper_verdict(paper + AGREE_STDS * std + 0.01, std, paper, 1000).startswith("is ")


def test_the_budget_stops_short_only_below_the_papers_updates():
    short = paper_verdict(30.0, 0.0, 15.6, PAPER_UPDATES - 1)
    assert f"after {PAPER_UPDATES - 1:,} updates against the paper's {PAPER_UPDATES:,}: the " \
           "budget stops short" in short
    full = paper_verdict(30.0, 0.0, 15.6, PAPER_UPDATES)
    assert "stops short" not in full and f"at the paper's budget ({PAPER_UPDATES:,} updates)" in full


def test_still_falling_is_said_only_when_the_last_point_is_lower():
    falling = paper_verdict(30.0, 0.0, 15.6, 1000, [(500, 31.0), (1000, 30.0 - EPS)])
    assert "still falling at the end (31.00% at update 500, 30.00% at 1,000)" in falling
    flat = paper_verdict(30.0, 0.0, 15.6, 1000, [(500, 30.0), (1000, 30.0)])
    assert "still falling" not in flat


def _cell(row: str, errors: list[float]) -> Cell:
    return Cell(row, "shapeset", [], errors)


def test_pair_verdict_threshold_is_the_larger_spread():
    worse = _cell("Tanh", [20.0, 22.0])  # std 1.414
    margin = statistics.stdev([20.0, 22.0])
    assert pair_verdict(_cell("Tanh N", [21.0 - margin - 0.01] * 2), worse) == "holds"
    assert pair_verdict(_cell("Tanh N", [21.0 - margin + 0.01] * 2), worse) == "tie"
    assert pair_verdict(_cell("Tanh N", [21.0 + margin - 0.01] * 2), worse) == "tie"
    assert pair_verdict(_cell("Tanh N", [21.0 + margin + 0.01] * 2), worse) == "reversed"


def test_ordering_sentence_names_each_pair_where_the_paper_does_not_hold():
    from initlab.report.table1 import ordering_sentence

    errors = {"Tanh N": [15.0, 15.2], "Softsign": [27.0, 27.2], "Softsign N": [30.0, 30.2],
              "Tanh": [27.1, 27.3], "Sigmoid": [80.0, 82.0]}
    cells = {("shapeset", row): _cell(row, e) for row, e in errors.items()}
    text = ordering_sentence("shapeset", cells)
    assert text.startswith("The paper's ordering on Shapeset (Tanh N, Softsign, Softsign N below "
                           "Tanh and Sigmoid) holds for 4 of 6 measured pairs; the others: ")
    spread = statistics.stdev([27.0, 27.2])
    assert (f"Softsign vs Tanh, 27.10% vs 27.20% (a tie: 0.10 points apart, within the seeds' "
            f"spread of {spread:.2f})") in text
    assert "Softsign N vs Tanh, 30.10% vs 27.20% (reversed by 2.90 points)" in text
    assert "Tanh N vs" not in text and "Sigmoid," not in text
    assert ordering_sentence("mnist", cells) is None  # nothing measured there


def test_the_papers_sweep_keeps_each_rows_rate_with_the_best_validation(tmp_path):
    """budget=paper: a row at several rates; the cell is the runs of the rate whose mean final
    validation accuracy is highest, even where another rate tests better."""
    from initlab.report.table1 import table1_cells, table1_section

    runs = []
    for i, (lr, seed, val, test) in enumerate([(0.01, 1, 0.97, 0.99), (0.01, 2, 0.96, 0.99),
                                               (0.1, 1, 0.98, 0.95), (0.1, 2, 0.98, 0.96)]):
        config = {"model": {"_target_": "initlab.models.MLP", "depth": 5, "width": 1000,
                            "activation": "tanh"}, "init": {"scheme": "xavier"},
                  "data": {"_target_": "initlab.data.MNISTDataModule"}, "optim": {"lr": lr},
                  "seed": seed, "budget": "paper"}
        result = {"status": "ok", "steps": PAPER_UPDATES,
                  "metrics": {"val/acc": val, "test/acc": test}}
        (tmp_path / str(i)).mkdir()
        runs.append(Run(tmp_path / str(i), config, [], result, None))
    (cell,) = table1_cells(runs).values()
    assert {r.lr for r in cell.runs} == {0.1} and sorted(cell.errors) == pytest.approx([4.0, 5.0])
    assert cell.lr_note == "chosen on validation accuracy from 0.01 (96.50%), 0.1 (98.00%)"
    text = "\n".join(table1_section(runs))
    assert "| Tanh N | not measured | 15.60 | 4.50 ± 0.71 (2) | 1.64 |" in text
    assert "| Tanh N | MNIST | paper | 5 x 1000 | 5,000,000 | 0.1 | chosen on validation" in text
    assert "at the paper's budget (5,000,000 updates)" in text


def test_a_cell_of_one_seed_shows_its_error_without_a_spread(tmp_path):
    """One seed has no spread: the cell shows its error and n, never a '± 0.00'."""
    from initlab.report.table1 import table1_section

    config = {"model": {"_target_": "initlab.models.MLP", "depth": 5, "width": 1000,
                        "activation": "softsign"}, "init": {"scheme": "standard"},
              "data": {"_target_": "initlab.data.MNISTDataModule"}, "optim": {"lr": 0.03},
              "seed": 1, "budget": "cpu"}
    test_acc = 0.9615
    result = {"status": "ok", "steps": 20_000, "metrics": {"val/acc": 0.96, "test/acc": test_acc}}
    run = Run(tmp_path, config, [], result, None)
    line = next(x for x in table1_section([run]) if x.startswith("| Softsign |"))
    assert f"| {100 * (1 - test_acc):.2f} (1) | {PAPER_TABLE1['mnist']['Softsign']:.2f} |" in line
    assert "±" not in line


# ---- a tiny real Shapeset sweep through the report ----

@pytest.fixture(scope="module")
def shapeset_sweep(tmp_path_factory):
    sweep = tmp_path_factory.mktemp("table1") / "sweep"
    proc = run_script(
        "train.py", "-m", "experiment=glorot_table1", "data=shapeset", "budget=cpu", "seed=1,2",
        f"hydra.sweep.dir={sweep}", "model.depth=2", "model.width=16", "trainer.max_steps=20",
        "trainer.val_check_interval=10", "pilots.steps=5", "pilots.lrs=[0.03,0.1]",
        "callbacks.probe.every_n_steps=5", "callbacks.probe.jacobian_samples=0",
        "callbacks.probe.histogram_every_n_steps=null", "data.val_size=200",
        "data.test_size=200", "data.eval_batch_size=100", "checkpoint=null",
        "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
        env={"OMP_NUM_THREADS": "1"}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep


@pytest.mark.slow  # reads the sweep: 10 runs through scripts/train.py
def test_report_quotes_the_shapeset_column_beside_its_own(shapeset_sweep):
    runs = collect_runs(shapeset_sweep)
    assert len(runs) == 10 and all(r.data == "shapeset" for r in runs)
    report = write_report(shapeset_sweep, runs).read_text()
    table = report.split("## Table 1")[1].split("\n## ")[0]
    assert "| row | Shapeset measured | Shapeset paper | MNIST measured | MNIST paper |" in table
    for name, paper in PAPER_TABLE1["shapeset"].items():
        members = [r for r in runs if r.table1_row == name]
        errors = [100 * (1 - r.result["metrics"]["test/acc"]) for r in members]
        line = next(x for x in table.splitlines() if x.startswith(f"| {name} |"))
        assert (f"| {statistics.mean(errors):.2f} ± {statistics.stdev(errors):.2f} (2) | "
                f"{paper:.2f} | not measured | {PAPER_TABLE1['mnist'][name]:.2f} |") in line
        how = next(x for x in table.splitlines() if x.startswith(f"| {name} | Shapeset | cpu |"))
        chosen = sorted({r.pilots["chosen"] for r in members})
        assert "| 2 x 16 | 20 |" in how and "pilots: 5 updates at each of 0.03, 0.1" in how
        assert all(f"{lr:g}" in how for lr in chosen)
        # every cell gets a sentence against the paper, with its numbers
        assert f"- {name}, Shapeset: " in table
    assert "The paper's ordering on Shapeset" in table
    assert "Model: 2 x 16 hidden units; the paper's is 5 x 1000." in table


@pytest.mark.slow  # reads the sweep
def test_report_draws_the_training_time_figures_from_the_runs(shapeset_sweep):
    from initlab.report.table1 import table1_cells
    from initlab.report.training_figures import activation_figure, error_curve_figure

    runs = collect_runs(shapeset_sweep)
    report = write_report(shapeset_sweep, runs).read_text()
    for name in ("activations_training.png", "test_error_training.png"):
        assert f"]({name})" in report and (shapeset_sweep / name).stat().st_size > 10_000
    fig = error_curve_figure(runs)
    (ax,) = fig.axes
    cells = table1_cells(runs)
    drawn = {line.get_label().split(" (")[0]: (list(line.get_xdata()), list(line.get_ydata()))
             for line in ax.get_lines()}
    assert set(drawn) == set(PAPER_TABLE1["shapeset"])
    for (_, row), cell in cells.items():
        curve = cell.curve()
        assert [s for s, _ in curve] == [10, 20]
        assert drawn[row][0] == [10, 20]
        assert drawn[row][1] == pytest.approx([e for _, e in curve])
        one = [dict(r.scalars("test_curve/error")) for r in cell.runs]
        assert curve[-1][1] == pytest.approx(statistics.mean(c[20] for c in one))
    fig = activation_figure(runs)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 5  # one per row: sigmoid, tanh, softsign at both inits
    assert {ax.get_xlabel() for ax in panels} == {"updates"}
    first_tanh = next(r for r in runs if r.table1_row == "Tanh")
    panel = next(ax for ax in panels if ax.get_title().startswith("tanh / standard"))
    # two lines a layer (mean, 98th percentile), the logged values
    assert len(panel.get_lines()) == 2 * 2
    steps, means = zip(*first_tanh.scalars("activation/fc2/mean"))
    assert any(list(line.get_xdata()) == list(steps)
               and list(line.get_ydata()) == pytest.approx(means) for line in panel.get_lines())
