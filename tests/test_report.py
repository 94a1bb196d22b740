"""The report reads a real (tiny) sweep back: rows, numbers and statuses come from the runs."""

from __future__ import annotations

import json
import math
import re
import statistics
import subprocess

import numpy as np
import pytest
import torch

from initlab.report import Run, collect_runs, write_report
from initlab.report.write import histogram_curves
from initlab.train import run
from tests.helpers import run_script, script_command, tiny_overrides, write_tiny_mnist


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """8 runs through scripts/train.py -m (the tests reading it are slow)."""
    root = tmp_path_factory.mktemp("report")
    write_tiny_mnist(root / "data")
    sweep = root / "sweep"
    proc = run_script(
        "train.py", "-m", f"hydra.sweep.dir={sweep}", *tiny_overrides((), root / "data"),
        "init=zeros,xavier", "optim.lr=1e12,0.01", "seed=1,2", "optim=sgd", "scheduler=none",
        "trainer.max_epochs=3", "status.check_every_n_steps=1", "callbacks=default",
        "callbacks.probe.every_n_steps=2", "checkpoint=null", "robustness=null", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep


@pytest.mark.slow  # reads the sweep
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
    # a step of 1e12 blows the loss up, whatever the init (zeros: through the output bias)
    for init in ("xavier", "zeros"):
        diverged_row = next(line for line in table
                            if line.startswith(f"| init={init} optim.lr=1000000000000.0 |"))
        assert "diverged: 2" in diverged_row and "(2 diverged, left out)" in diverged_row
        assert "| - **(" in diverged_row and "| 0 |" in diverged_row  # no mean: n = 0
    stalled = next(line for line in table if line.startswith("| init=zeros optim.lr=0.01 |"))
    assert "stalled: 2" in stalled and "(includes 2 stalled)" in stalled


@pytest.mark.slow  # reads the sweep
def test_at_init_table_reads_init_stats(sweep):
    runs = collect_runs(sweep)
    report = (sweep / "report.md").read_text() if (sweep / "report.md").exists() \
        else write_report(sweep, runs).read_text()
    first_xavier = next(r for r in runs if r.init == "xavier")
    value = first_xavier.init_stats["layers"]["conv1"]["activation_std"]
    section = report.split("**activation std at initialization**")[1].split("**")[0]
    conv1 = next(line for line in section.splitlines() if line.startswith("| conv1 |"))
    assert f"{value:.4g}" in conv1


@pytest.mark.slow  # reads the sweep
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


@pytest.mark.slow  # reads the sweep
def test_partial_sweep_is_marked(sweep, tmp_path):
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(sweep, partial)
    job = sorted(p for p in partial.iterdir() if p.is_dir() and (p / "result.json").exists())[0]
    (job / "result.json").unlink()
    report = write_report(partial, collect_runs(partial)).read_text()
    # its process ended long ago on this host: lost, not running
    assert "Partial results:** 1 of 8 runs have no result.json: 0 still running, 1 lost" in report
    assert "lost: 1" in report and "running: 1" not in report
    heartbeat = json.loads((job / "heartbeat.json").read_text())
    assert f"lost: pid {heartbeat['pid']} on {heartbeat['host']} is gone" in report


@pytest.mark.slow  # reads the sweep
def test_each_row_says_why_from_the_runs_numbers(sweep):
    """Each configuration's row and each run's line give the status with the measurement
    behind it, read from result.json."""
    runs = collect_runs(sweep)
    report = write_report(sweep, runs).read_text()
    table = report.split("## Test error per configuration")[1].split("##")[0]
    runs_table = report.split("## Runs")[1]
    for job in runs:
        res = job.result
        if res["status"] == "diverged":
            loss = res["diverged_loss"]
            if isinstance(loss, str):  # not finite: written by name
                assert loss in ("nan", "inf", "-inf") and "not finite" in res["status_reason"]
            else:
                assert loss > res["blowup_factor"] * res["first_loss"]
                loss = f"{loss:.3g}"
            why = f"diverged at step {res['diverged_step']}, loss {loss}"
        else:
            sign = "<" if res["status"] == "stalled" else ">="
            why = (f"{res['status']}: {res['accuracy_basis']} {100 * res['final_accuracy']:.1f}% "
                   f"{sign} {100 * res['stall_accuracy']:g}%")
            assert (res["final_accuracy"] < res["stall_accuracy"]) == (res["status"] == "stalled")
        row = next(line for line in table.splitlines() if line.startswith(f"| {job.label} |"))
        assert why in row, (why, row)
        line = next(line for line in runs_table.splitlines()
                    if line.startswith(f"| {job.path.relative_to(sweep)} |"))
        assert why in line


@pytest.mark.slow  # a run through scripts/train.py, killed
def test_a_killed_run_is_lost_not_running(tiny_data, tmp_path):
    """SIGKILL leaves no result.json: while the process lives the report says running, once it
    is gone, lost; a heartbeat from another host is judged by its age."""
    import signal
    import time

    from initlab.report.collect import STALE_AFTER_S

    out = tmp_path / "job"
    proc = subprocess.Popen(
        script_command("train.py", f"hydra.run.dir={out}", *tiny_overrides((), tiny_data),
                       "trainer.max_epochs=100000", "robustness=null", "checkpoint=null"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (out / "heartbeat.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        (running,) = collect_runs(out)
        assert running.status == "running"
        assert running.liveness()[1].startswith(f"pid {proc.pid} on ")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    (lost,) = collect_runs(out)
    assert lost.result is None and lost.status == "lost"
    assert f"pid {proc.pid} on " in lost.liveness()[1] and "is gone" in lost.liveness()[1]
    assert "0 still running, 1 lost" in write_report(out, [lost]).read_text()
    # another host: no process to look for, only how long ago it beat
    beat = json.loads((out / "heartbeat.json").read_text())
    (out / "heartbeat.json").write_text(json.dumps({**beat, "host": "elsewhere"}))
    last = lost.liveness()  # the file as written: fresh
    (elsewhere,) = collect_runs(out)
    assert last[0] == "lost" and elsewhere.status == "running"
    late = time.time() + STALE_AFTER_S + 60
    assert elsewhere.liveness(now=late)[0] == "lost"
    assert "no heartbeat from pid" in elsewhere.liveness(now=late)[1]


@pytest.mark.slow  # reads the sweep
def test_single_run_report(sweep):
    job = sorted(p for p in sweep.iterdir() if p.is_dir())[0]
    proc = run_script("report.py", str(job))
    assert proc.returncode == 0, proc.stderr
    assert "1 run(s)" in proc.stdout and (job / "report.md").exists()
    result = json.loads((job / "result.json").read_text())
    assert result["status"] in (job / "report.md").read_text()


def test_report_on_missing_dir_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no runs under"):
        collect_runs(tmp_path)


def normal_cdf(x, mean=0.0, std=1.0):
    return 0.5 * (1 + np.vectorize(math.erf)((np.asarray(x) - mean) / (std * math.sqrt(2))))


DISTRIBUTIONS = {  # name: (sampler, cdf)
    "normal": (lambda n, g: torch.randn(n, generator=g), normal_cdf),
    "uniform": (lambda n, g: torch.rand(n, generator=g) * 2 - 1,
                lambda x: np.clip((np.asarray(x) + 1) / 2, 0, 1)),
    "bimodal": (lambda n, g: torch.randn(n, generator=g) * 0.5
                + torch.where(torch.rand(n, generator=g) < 0.5, -2.0, 2.0),
                lambda x: 0.5 * normal_cdf(x, -2, 0.5) + 0.5 * normal_cdf(x, 2, 0.5)),
}


def one_run_with(tmp_path, samples: dict[str, torch.Tensor], tensorboard_buckets=False) -> Run:
    """An events file with the monitors' histograms (or TensorBoard's own) of ``samples``."""
    from torch.utils.tensorboard import SummaryWriter

    from initlab.monitors.callbacks import write_histogram
    from initlab.monitors.stats import histogram

    writer = SummaryWriter(str(tmp_path))
    for name, values in samples.items():
        if tensorboard_buckets:
            writer.add_histogram(f"hist/activation/{name}", values, 0)
        else:
            write_histogram(writer, f"hist/activation/{name}", histogram(values).tolist(), 0)
    writer.close()
    return Run(tmp_path, {}, [], None, None)


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_report_histograms_are_the_true_density(tmp_path, name):
    sampler, cdf = DISTRIBUTIONS[name]
    n = 200_000
    values = sampler(n, torch.Generator().manual_seed(0))
    x, density = histogram_curves(one_run_with(tmp_path, {name: values}), "activation")[name]
    width = x[1] - x[0]
    p = cdf(x + width / 2) - cdf(x - width / 2)  # each bin's true probability
    expected = p / width
    noise = np.sqrt(n * p * (1 - p)) / (n * width)  # the binomial sd of each bin's density
    assert np.all(np.abs(density - expected) <= 5 * noise + 1e-3 * expected.max())
    assert (density * width).sum() == pytest.approx(1.0)


def test_tensorboard_exponential_buckets_show_no_dip_at_zero(tmp_path):
    values = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    run = one_run_with(tmp_path, {"normal": values}, tensorboard_buckets=True)
    x, density = histogram_curves(run, "activation")["normal"]
    central = np.abs(x) < 1.5  # where TensorBoard's buckets are narrower than the grid's
    truth = np.exp(-x[central] ** 2 / 2) / math.sqrt(2 * math.pi)
    assert np.allclose(density[central], truth, rtol=0.06)


def test_curves_are_sorted_by_step_and_keep_the_last_write(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    for step, value in ((0, 1.0), (5, 2.0), (10, 3.0), (5, 2.5), (15, 4.0)):  # a resume at 5
        writer.add_scalar("val/acc", value, step)
    writer.close()
    assert Run(tmp_path, {}, [], None, None).scalars("val/acc") == [
        (0, 1.0), (5, 2.5), (10, 3.0), (15, 4.0)]


def largest_dip(density: np.ndarray) -> float:
    """How far a bin falls below the lower of the highest densities on each side of it: 0 for a
    unimodal curve, the depth of the hole for a bimodal one."""
    dips = [min(density[:i].max(), density[i + 1:].max()) - density[i]
            for i in range(1, len(density) - 1)]
    return max(0.0, *dips)


def test_tanh_activations_at_init_are_unimodal_densities(make_cfg, tmp_path):
    """The paper's Fig. 6 shape at step 0: tanh 5 x 1000, raw pixels, standard and xavier."""
    for scheme in ("standard", "xavier"):
        out = tmp_path / scheme
        run(make_cfg("model=mlp", "model.width=1000", "model.depth=5", "model.activation=tanh",
                     f"init={scheme}", "data.normalize=false", "callbacks=default",
                     "callbacks.probe.jacobian_samples=0", "logger=tensorboard", "test=false",
                     "trainer.max_steps=1", f"output_dir={out}"))
        curves = histogram_curves(Run(out, {}, [], None, None), "activation")
        assert set(curves) == {f"fc{i}" for i in range(1, 6)}
        for layer, (x, density) in curves.items():
            assert largest_dip(density) < 0.1 * density.max(), (scheme, layer)
            assert abs(x[density.argmax()]) < 0.25 * (x[-1] - x[0]), (scheme, layer)  # near 0


@pytest.mark.parametrize("scale", [1.5e-4, 3.5e-4, 1.4e-3, 1.0])
def test_histogram_tick_labels_do_not_overlap(tmp_path, scale):
    """Back-propagated gradients at init span about 1e-4: the figure's tick labels, drawn at
    its size, stay apart (plain labels like -0.00015 ran into each other)."""
    from initlab.report.write import histogram_figure

    values = torch.randn(50_000, generator=torch.Generator().manual_seed(0)) * scale / 3
    fig = histogram_figure([one_run_with(tmp_path, {"conv1": values, "fc1": values / 2})],
                           "activation")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for axis in (fig.axes[0].xaxis, fig.axes[0].yaxis):
        labels = [t for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]
        assert len(labels) >= 3
        boxes = [t.get_window_extent(renderer) for t in labels]
        assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:])), \
            [t.get_text() for t in labels]


def test_at_init_columns_name_the_data_set_when_a_sweep_has_two(tmp_path):
    """Table 1 sweeps hold both columns: each at-init column says whose data it is, so the two
    'tanh / xavier' columns are told apart; one data set keeps the short label."""
    from initlab.report.write import _at_init_markdown

    stats = {"layers": {"fc1": {"activation_std": 0.5}}}
    runs = [Run(tmp_path / data, {"model": {"activation": "tanh"}, "init": {"scheme": "xavier"},
                                  "data": {"_target_": target}}, [], None, stats, label=data)
            for data, target in (("mnist", "initlab.data.MNISTDataModule"),
                                 ("shapeset", "initlab.data.ShapesetDataModule"))]
    header = next(x for x in _at_init_markdown(runs) if x.startswith("| layer |"))
    assert header == "| layer | tanh / xavier (MNIST) | tanh / xavier (Shapeset) |"
    header = next(x for x in _at_init_markdown(runs[:1]) if x.startswith("| layer |"))
    assert header == "| layer | tanh / xavier |"
