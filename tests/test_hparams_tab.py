"""What TensorBoard's HParams tab shows, read through TensorBoard's own HTTP API (the JSON its
page reads): in a sweep the swept settings differ and come first; a single run's do not."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from initlab.loggers import SESSION_DIR, hparams_columns
from initlab.train import run

pytestmark = pytest.mark.slow  # each test starts a TensorBoard server: seconds of imports
SWEEP = [("0.01", "xavier"), ("0.01", "he"), ("0.1", "xavier"), ("0.1", "he")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tensorboard_experiment(logdir: Path) -> dict:
    """Start tensorboard on ``logdir`` (a free local port; the logs read once, in full, before
    it serves), POST the hparams experiment request the HParams page makes, return the JSON;
    stop tensorboard."""
    port = free_port()
    exe = Path(sys.executable).with_name("tensorboard")
    errors = logdir.parent / f"tensorboard-{port}.err"
    with open(errors, "wb") as stderr:
        proc = subprocess.Popen([str(exe), "--logdir", str(logdir), "--host", "127.0.0.1",
                                 "--port", str(port), "--reload_interval", "0",
                                 "--reload_task", "blocking"],
                                stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 120
        while True:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/data/plugin/hparams/experiment",
                data=json.dumps({"experimentName": ""}).encode(),
                headers={"Content-Type": "application/json", "X-TensorBoard-Request": "1"})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return json.loads(response.read())
            except OSError as err:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"tensorboard did not answer: "
                                         f"{errors.read_text()[-2000:]}") from err
                time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def make_runs(make_cfg, root: Path, settings) -> list:
    cfgs = []
    for i, (lr, init) in enumerate(settings):
        cfg = make_cfg(f"optim.lr={lr}", f"init={init}", "robustness=null", "checkpoint=null",
                       "trainer.max_steps=2", f"output_dir={root / str(i)}", outputs=True)
        run(cfg)
        cfgs.append(cfg)
    return cfgs


def test_a_sweep_shows_its_swept_settings_first(make_cfg, tmp_path):
    cfgs = make_runs(make_cfg, tmp_path / "sweep", SWEEP)
    experiment = tensorboard_experiment(tmp_path / "sweep")
    infos = experiment["hparamInfos"]
    differing = [info["name"] for info in infos if info.get("differs")]
    # the oracle: the columns whose values differ between the runs' configs
    columns = [hparams_columns(cfg) for cfg in cfgs]
    varied = {k for k in columns[0] if len({str(c.get(k)) for c in columns}) > 1}
    assert {"lr", "init"} <= varied
    assert set(differing) == varied
    # listed first, so the page ticks them among its first five columns; the rest stay there
    assert [info["name"] for info in infos[: len(varied)]] == sorted(varied)
    assert {info["name"] for info in infos} == set(columns[0])
    # the metric columns: the final metrics only, not the training curves
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert metrics == {"hparams/val_acc", "hparams/val_loss", "hparams/test_acc",
                       "hparams/test_loss"}
    assert all(m["name"].get("group", "") == "" for m in experiment["metricInfos"])
    # each run's session sits in its own folder, apart from its curves
    assert all((tmp_path / "sweep" / str(i) / SESSION_DIR).is_dir() for i in range(len(SWEEP)))


def test_a_single_run_has_nothing_that_differs(make_cfg, tmp_path):
    cfgs = make_runs(make_cfg, tmp_path / "single", SWEEP[:1])
    experiment = tensorboard_experiment(tmp_path / "single")
    infos = experiment["hparamInfos"]
    assert {info["name"] for info in infos} == set(hparams_columns(cfgs[0]))
    assert not any(info.get("differs") for info in infos)


@pytest.mark.parametrize("settings", [SWEEP[:2], SWEEP[::2]])
def test_two_runs_show_the_one_setting_they_differ_by(make_cfg, tmp_path, settings):
    make_runs(make_cfg, tmp_path / "pair", settings)
    infos = tensorboard_experiment(tmp_path / "pair")["hparamInfos"]
    differing = {info["name"] for info in infos if info.get("differs")}
    assert ("init" in differing) == (settings[0][1] != settings[1][1])
    assert ("lr" in differing) == (settings[0][0] != settings[1][0])
