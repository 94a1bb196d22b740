"""The lesson experiments: every experiment=lesson/<topic> runs as a multirun that exits 0 and
the report draws its figure with its measured sentence; on real MNIST the three acceptance
claims hold (a too-small and a too-large learning rate, a diverged and a cured deep ReLU net,
one distinct unit per layer under zero init)."""

from __future__ import annotations

import json
import re

import pytest
from omegaconf import OmegaConf

from initlab.report.collect import Run
from initlab.report.lessons import LESSONS, choice, lesson_section
from tests.helpers import CONF, compose_config, run_script

TOPICS = list(LESSONS)
CNN_TOPICS = {"fitting", "dropout", "augmentation"}


def test_every_lesson_has_an_experiment_and_the_lesson_order():
    files = sorted(p.stem for p in (CONF / "experiment" / "lesson").glob("*.yaml")
                   if not p.stem.startswith("_"))
    assert files == sorted(TOPICS)
    assert [LESSONS[t][0] for t in TOPICS] == list(range(1, 13))


NOT_RUN = "output_dir=/tmp/unused"  # composed, never trained


@pytest.mark.parametrize("topic", TOPICS)
def test_lesson_scale_full_is_the_bigger_version(topic):
    arm = ["+arm/fitting=overfit"] if topic == "fitting" else []  # its arms hold its budgets
    small = compose_config(NOT_RUN, f"experiment=lesson/{topic}", *arm)
    full = compose_config(NOT_RUN, f"experiment=lesson/{topic}", "lesson.scale=full", *arm)
    assert small.lesson.topic == topic and small.lesson.scale == "small"
    small, full = (OmegaConf.to_container(c, resolve=True) for c in (small, full))
    assert full["data"]["train_samples"] is None or full["data"]["train_samples"] >= \
        (small["data"]["train_samples"] or 0)
    differs = [k for k in ("data", "model", "trainer") if small[k] != full[k]]
    assert differs, f"lesson.scale=full changes nothing in lesson/{topic}"


def test_a_bad_lesson_scale_names_the_allowed_ones():
    cfg = compose_config(NOT_RUN, "experiment=lesson/symmetry", "lesson.scale=huge")
    with pytest.raises(Exception, match=r"lesson.scale='huge' is invalid; allowed: \['small', 'full'\]"):
        OmegaConf.to_container(cfg, resolve=True)


def _tiny_lesson(topic, tiny_data, sweep, *extra, train_samples=True):
    args = ["-m", f"experiment=lesson/{topic}", f"hydra.sweep.dir={sweep}",
            f"data.data_dir={tiny_data}", "data.verify=false", "data.sources=[local]",
            *(["data.train_samples=96"] if train_samples else []),
            "data.eval_batch_size=100",
            "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "trainer.max_steps=4",
            "trainer.log_every_n_steps=1", "callbacks.update_ratio.every_n_steps=1", *extra]
    if topic not in CNN_TOPICS:
        args.append("model.width=16")
    if topic == "augmentation":
        args += ["robustness.noise=[0.2,0.5]", "robustness.skew=[20,45]"]
    proc = run_script("train.py", *args, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _report(sweep) -> dict:
    proc = run_script("report.py", str(sweep))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((sweep / "lesson.json").read_text())


def _numbers_in(text: str) -> list[str]:
    return re.findall(r"\d+\.?\d*", text)


@pytest.mark.slow
@pytest.mark.parametrize("scale", ["small", "full"])
@pytest.mark.parametrize("topic", TOPICS)
def test_every_lesson_runs_as_a_multirun_and_the_report_draws_it(topic, scale, tiny_data, tmp_path):
    sweep = tmp_path / "sweep"
    # batch_size at full keeps its data.train_samples (null: the whole tiny training set), the
    # case that crashed its report; the others train on 96 examples to get a validation in 4
    # steps (and the tiny set has fewer than the 1,000 the overfit arm asks for)
    whole = scale == "full" and topic == "batch_size"
    _tiny_lesson(topic, tiny_data, sweep, f"lesson.scale={scale}", train_samples=not whole)
    jobs = [p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()]
    results = [json.loads((job / "result.json").read_text()) for job in jobs]
    assert results and all(r["status"] in ("ok", "stalled", "diverged") for r in results), results
    lesson = _report(sweep)
    assert lesson["topic"] == topic and lesson["finished"] == lesson["runs"] == len(jobs)
    for figure in lesson["figures"].values():  # one per language
        assert (sweep / figure).stat().st_size > 1000
    sentence = " ".join(lesson["sentences"])
    portuguese = " ".join(lesson["text"]["pt-BR"]["sentences"] + lesson["text"]["pt-BR"]["table"])
    assert not re.search(r"\d\.\d+%", portuguese), portuguese
    # every quantity was found: no None, nan or "-" placeholder where a number should be
    assert _numbers_in(sentence) and not re.search(r"None|nan|(?<![\w\[])-(?=[%,;. ]|$)", sentence), \
        sentence
    report = (sweep / "report.md").read_text()
    number, title, _ = LESSONS[topic]
    assert f"## Lesson {number}: {title}" in report and lesson["sentences"][0] in report
    # the lesson's measured numbers are the runs' own: every test accuracy it quotes is a run's
    accuracies = {round(100 * r["metrics"]["test/acc"], 6) for r in results
                  if "test/acc" in r["metrics"] and r["status"] != "diverged"}

    def quoted(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "test_acc_pct" and value is not None:
                    yield round(value, 6)
                else:
                    yield from quoted(value)

    assert set(quoted(lesson["numbers"])) <= accuracies


@pytest.mark.slow
def test_symmetry_lesson_on_tiny_data_counts_units_from_the_weights(tiny_data, tmp_path):
    sweep = tmp_path / "sweep"
    _tiny_lesson("symmetry", tiny_data, sweep)
    lesson = _report(sweep)
    zeros, xavier = lesson["numbers"]["inits"]["zeros"], lesson["numbers"]["inits"]["xavier"]
    assert set(zeros["distinct_units"]) == {1}
    assert set(xavier["distinct_units"]) == {16} == {xavier["units"]}


# ---------------------------------------------------------------- reading runs, without training

def _run(path, overrides=(), result=None, **config):
    base = {"lesson": {"topic": "learning_rate", "scale": "small"}, "optim": {"lr": 0.1},
            "init": {"scheme": "xavier"}, "model": {"activation": "tanh"}}
    return Run(path, {**base, **config}, list(overrides), result, None)


def test_choice_reads_swept_groups_from_overrides_and_values_from_the_resolved_config(tmp_path):
    run = _run(tmp_path, ["+arm/exploding=he", "optim=adam", "optim.lr=1e-4", "init=zeros"],
               optim={"lr": 1e-4}, init={"scheme": "zeros"},
               data={"train_samples": "${lesson_scale:10000,null}"})
    assert choice(run, "arm/exploding") == "he" and choice(run, "optim") == "adam"
    assert choice(run, "arm/fitting") is None  # not swept: no option chosen
    assert choice(run, "optim.lr") == 1e-4 and isinstance(choice(run, "optim.lr"), float)
    assert choice(run, "init.scheme") == "zeros"
    assert choice(run, "data.train_samples") == 10000
    full = _run(tmp_path, lesson={"topic": "x", "scale": "full"},
                data={"train_samples": "${lesson_scale:10000,null}"})
    assert choice(full, "data.train_samples") is None
    assert choice(run, "output_dir", "unknown") == "unknown"  # no such key


def test_a_partial_sweep_reports_what_it_has_and_says_what_is_missing(tmp_path):
    ok = {"status": "ok", "steps": 10, "best_val_acc": 0.9, "metrics": {"test/acc": 0.91}}
    runs = [_run(tmp_path / "0", ["optim.lr=0.1"], ok),
            _run(tmp_path / "1", ["optim.lr=10"], None, optim={"lr": 10.0}),  # still running
            _run(tmp_path / "2", ["optim.lr=0.1", "seed=1"], ok)]  # shares lr 0.1
    for run in runs:
        run.path.mkdir()
    lines = "\n".join(lesson_section(tmp_path, runs))
    assert "from 2 of 3 runs" in lines and "the largest, 10: not finished" in lines
    assert "several runs share the configuration(s) (0.1,)" in lines
    lesson = json.loads((tmp_path / "lesson.json").read_text())
    assert lesson["numbers"]["0.1"]["test_acc_pct"] == pytest.approx(91.0)
    assert lesson["numbers"]["10"]["status"] == "running"


# ---------------------------------------------------------------- real MNIST, the claims

def _real_lesson(topic, sweep, *extra) -> dict:
    proc = run_script("train.py", "-m", f"experiment=lesson/{topic}", f"hydra.sweep.dir={sweep}",
                      "trainer.enable_progress_bar=false", *extra, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _report(sweep)


@pytest.mark.real_data
def test_zero_init_leaves_one_distinct_unit_per_layer_on_mnist(tmp_path):
    lesson = _real_lesson("symmetry", tmp_path / "sweep")
    numbers = lesson["numbers"]["inits"]
    for init in ("zeros", "constant"):
        assert set(numbers[init]["distinct_units"]) == {1}, numbers[init]
    assert set(numbers["xavier"]["distinct_units"]) == {numbers["xavier"]["units"]}
    assert numbers["xavier"]["test_acc_pct"] > numbers["zeros"]["test_acc_pct"] + 50


@pytest.mark.real_data
def test_learning_rate_too_small_is_far_below_the_best_and_too_large_diverges(tmp_path):
    lesson = _real_lesson("learning_rate", tmp_path / "sweep")
    numbers = lesson["numbers"]
    best = numbers[f"{numbers['best_lr']:g}"]["test_acc_pct"]
    assert numbers["0.0001"]["test_acc_pct"] < best - 20, numbers
    assert numbers["10"]["status"] == "diverged" or \
        numbers["10"]["last_loss"] >= 0.9 * numbers["10"]["first_loss"], numbers
    assert numbers["lr_find_suggestion"] is not None


@pytest.mark.real_data
def test_exploding_lesson_diverges_and_every_cure_trains(tmp_path):
    lesson = _real_lesson("exploding", tmp_path / "sweep")
    numbers = lesson["numbers"]["arms"]
    assert numbers["too_large"]["status"] == "diverged"
    assert numbers["too_large"]["growth"] > 10
    for cure in ("he", "clipping", "batchnorm"):
        assert numbers[cure]["status"] == "ok" and numbers[cure]["test_acc_pct"] > 50, numbers[cure]
