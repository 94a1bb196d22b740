"""Beyond one machine, as far as this one allows: sweeps through submitit's local executor, the
SLURM request checked against the trainer, Lightning's reading of SLURM's environment, and a
job stopped by a scheduler's signal that continues in its folder when relaunched or requeued."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from initlab.cluster import check_launcher
from initlab.report import collect_runs
from tests.helpers import (
    ROOT,
    compose_config,
    run_script,
    script_command,
    script_env,
    tiny_overrides,
    write_tiny_mnist,
)

try:
    import hydra_plugins.hydra_submitit_launcher  # noqa: F401
    HAVE_SUBMITIT = True
except ImportError:
    HAVE_SUBMITIT = False
needs_submitit = pytest.mark.skipif(not HAVE_SUBMITIT, reason="needs the [slurm] extra: "
                                    'pip install -e ".[dev,slurm]" (what the README and CI install)')



def tiny(data_dir: Path) -> list[str]:
    """The tiny run in 6 batches of 16 an epoch."""
    return [*tiny_overrides((), data_dir), "data.batch_size=16", "robustness=null"]


def fake_cluster(tmp_path: Path) -> tuple[dict, Path]:
    """``sbatch``/``srun`` that queue nothing (on the PATH given back): sbatch keeps a copy of
    the script it was given."""
    bin_dir, copy = tmp_path / "bin", tmp_path / "sbatch_script.sh"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {copy}\necho "no cluster here" >&2\nexit 1\n')
    (bin_dir / "srun").write_text('#!/bin/sh\necho "no cluster here" >&2\nexit 1\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}, copy


@needs_submitit
def test_two_nodes_of_four_gpus_compose_into_a_matching_sbatch_request(tmp_path):
    """The request follows the trainer (one place): the script submitit hands to sbatch for
    trainer=ddp, 4 devices, 2 nodes asks for 2 nodes x 4 tasks x 4 GPUs, and each job's
    pickled config trains on the devices and nodes requested."""
    env, script = fake_cluster(tmp_path)
    sweep = tmp_path / "sweep"
    proc = run_script("train.py", "-m", "hydra/launcher=slurm", "trainer=ddp",
                      "trainer.devices=4", "trainer.num_nodes=2", "trainer.accelerator=gpu",
                      "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=240",
                      f"hydra.sweep.dir={sweep}", "seed=1,2", env=env)
    assert proc.returncode != 0 and "no cluster here" in proc.stderr  # it reached sbatch
    lines = set(script.read_text().splitlines())
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu",
                 "--time=240", "--array=0-1%2", "--signal=USR2@120"):
        assert f"#SBATCH {line}" in lines, line
    jobs = [pickle.loads(p.read_bytes()) for p in (sweep / ".submitit").glob("*.pkl")]
    assert len(jobs) == 2
    for delayed in jobs:
        launcher, (overrides, *_rest) = delayed.function, delayed.args
        job = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, overrides)
        assert (job.trainer.devices, job.trainer.num_nodes, job.trainer.strategy) == (4, 2, "ddp")
        assert launcher.params["tasks_per_node"] == job.trainer.devices
        assert launcher.params["nodes"] == job.trainer.num_nodes


@needs_submitit
def test_a_request_that_disagrees_stops_before_anything_is_queued(tmp_path):
    env, script = fake_cluster(tmp_path)
    sweep = tmp_path / "sweep"
    proc = run_script("train.py", "-m", "hydra/launcher=slurm", "trainer=ddp",
                      "trainer.devices=4", "trainer.num_nodes=2", "trainer.accelerator=gpu",
                      "hydra.launcher.tasks_per_node=2", f"hydra.sweep.dir={sweep}", "seed=1,2",
                      env=env, timeout=120)
    assert proc.returncode == 1
    assert "nothing was queued" in proc.stderr
    assert "hydra.launcher.tasks_per_node=2 but trainer.devices=4" in proc.stderr
    assert not script.exists() and not sweep.exists()


@needs_submitit
@pytest.mark.parametrize(("overrides", "message"), [
    (["hydra.launcher.nodes=1", "trainer.num_nodes=2"],
     "hydra.launcher.nodes=1 but trainer.num_nodes=2"),
    (["hydra.launcher.gpus_per_node=2"], "hydra.launcher.gpus_per_node=2 but trainer.devices=4"),
    (["trainer.accelerator=cpu"], "gpus_per_node=4 with trainer.accelerator=cpu"),
    (["hydra.launcher.gpus_per_node=0", "trainer.accelerator=gpu"],
     "trainer.accelerator=gpu but hydra.launcher.gpus_per_node=0"),
    (["trainer.devices=auto"], "trainer.devices='auto': give a number"),
    (["trainer.max_time=00:02:00:00"], "trainer.max_time=00:02:00:00 is not shorter than"),
    (["hydra.launcher.signal_delay_s=7200"], "signal_delay_s=7200 is not shorter than timeout_min=120"),
])
def test_each_disagreement_is_named(overrides, message):
    cfg = compose_config("hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", *overrides,
                         hydra=True)
    with pytest.raises(SystemExit, match="nothing was queued") as caught:
        check_launcher(cfg)
    assert message in str(caught.value)


@needs_submitit
def test_the_defaults_and_the_local_executor_agree_with_the_trainer():
    check_launcher(compose_config("hydra/launcher=slurm", hydra=True))  # 1 node, 1 task, 1 GPU
    check_launcher(compose_config("hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4",
                                  "trainer.num_nodes=2", "trainer.max_time=00:01:00:00",
                                  hydra=True))
    check_launcher(compose_config("hydra/launcher=slurm_local", "trainer.accelerator=cpu",
                                  hydra=True))
    # trainer=ddp's devices=auto is no request submitit can make: a number is asked for
    with pytest.raises(SystemExit, match="trainer.devices='auto': give a number"):
        check_launcher(compose_config("hydra/launcher=slurm_local", "trainer=ddp", hydra=True))
    with pytest.raises(SystemExit, match="use trainer.strategy=ddp_spawn"):
        check_launcher(compose_config("hydra/launcher=slurm_local", "trainer=ddp",
                                      "trainer.devices=2", hydra=True))
    check_launcher(compose_config("hydra/launcher=slurm_local", "trainer=ddp", "trainer.devices=2",
                                  "trainer.strategy=ddp_spawn", hydra=True))


SLURM_PROBE = """
import json, sys
from initlab.train import build
from tests.helpers import compose_config
_, _, trainer = build(compose_config(*sys.argv[1:]))
env = trainer.strategy.cluster_environment
print(json.dumps({"environment": type(env).__name__, "auto_requeue": env.auto_requeue,
                  "global_rank": trainer.global_rank, "local_rank": trainer.local_rank,
                  "node_rank": trainer.node_rank, "world_size": trainer.world_size,
                  "main_address": env.main_address, "main_port": env.main_port}))
"""

SLURM_ENV = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train", "SLURM_NTASKS": "8",
             "SLURM_NTASKS_PER_NODE": "4", "SLURM_NNODES": "2", "SLURM_NODELIST": "gpu[07-08]",
             "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NODEID": "1"}


def slurm_probe(tmp_path, tiny_data, env: dict, *overrides: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SLURM_", "MASTER_", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK"))}
    return subprocess.run(
        [sys.executable, "-c", SLURM_PROBE, "trainer=ddp", "trainer.accelerator=cpu",
         "trainer.devices=4", "trainer.num_nodes=2", f"data.data_dir={tiny_data}",
         f"output_dir={tmp_path / 'run'}", *overrides],
        capture_output=True, text=True, timeout=300, env={**clean, **env}, cwd=ROOT)


@pytest.mark.slow  # a fresh interpreter importing Lightning
def test_lightning_reads_the_ranks_slurm_gives_a_task(tmp_path, tiny_data):
    """Task 5 of 2 nodes x 4 tasks, as srun would start it: no cluster, SLURM's variables."""
    proc = slurm_probe(tmp_path, tiny_data, SLURM_ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen == {"environment": "SLURMEnvironment", "auto_requeue": False,
                    "global_rank": int(SLURM_ENV["SLURM_PROCID"]),
                    "local_rank": int(SLURM_ENV["SLURM_LOCALID"]),
                    "node_rank": int(SLURM_ENV["SLURM_NODEID"]),
                    "world_size": int(SLURM_ENV["SLURM_NTASKS"]),
                    "main_address": "gpu07",  # the first node of the list
                    "main_port": 15000 + int(SLURM_ENV["SLURM_JOB_ID"][-4:])}


@pytest.mark.slow  # a fresh interpreter importing Lightning
def test_a_job_whose_tasks_disagree_with_the_trainer_fails_on_start(tmp_path, tiny_data):
    proc = slurm_probe(tmp_path, tiny_data, {**SLURM_ENV, "SLURM_NTASKS_PER_NODE": "2"})
    assert proc.returncode != 0
    assert "`devices=4`" in proc.stderr and "--ntasks-per-node=2" in proc.stderr


@needs_submitit
@pytest.mark.slow
def test_a_sweep_through_submitit_local_reports_a_diverged_job_among_healthy_ones(tiny_data,
                                                                                  tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_script("train.py", "-m", "hydra/launcher=slurm_local", f"hydra.sweep.dir={sweep}",
                      *tiny(tiny_data), "optim=sgd", "scheduler=none", "optim.lr=0.05,0.1,1e12",
                      "trainer.max_epochs=2", "status.check_every_n_steps=1",
                      "status.stall_accuracy=0", "checkpoint=null")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = {}
    for job in sorted(p for p in sweep.iterdir() if p.name.isdigit()):
        lr = OmegaConf.load(job / ".hydra" / "config.yaml").optim.lr
        jobs[lr] = json.loads((job / "result.json").read_text())
    assert sorted(jobs) == [0.05, 0.1, 1e12]
    assert jobs[1e12]["status"] == "diverged" and jobs[1e12]["score"] is None
    assert jobs[0.05]["status"] == jobs[0.1]["status"] == "ok"
    assert all(0 <= jobs[lr]["metrics"]["test/acc"] <= 1 for lr in (0.05, 0.1))
    # submitit's own record of each job: its pickles and logs, as on a cluster
    assert len(list((sweep / ".submitit").glob("*/*_0_log.err"))) == 3
    assert len(list((sweep / ".submitit").glob("*/*_0_result.pkl"))) == 3

    report = run_script("report.py", str(sweep))
    assert report.returncode == 0, report.stderr[-3000:]
    text = (sweep / "report.md").read_text()
    # the failed job's row says what happened, with its step; the healthy ones say ok
    assert re.search(r"\| optim\.lr=1000000000000\.0 \| 0 \| diverged at step \d+, loss ", text), text
    assert len(re.findall(r"\| optim\.lr=0\.(05|1) \| 0 \| ok", text)) == 2, text

    # jobs gathered from several machines: each machine's job folders under one folder
    gathered = tmp_path / "gathered"
    for machine in ("node-a", "node-b"):
        shutil.copytree(sweep, gathered / machine, ignore=shutil.ignore_patterns(".submitit"))
    runs = collect_runs(gathered)
    assert len(runs) == 6
    assert sorted(r.result["status"] for r in runs) == ["diverged"] * 2 + ["ok"] * 4


# 96 examples in batches of 16: 6 steps an epoch; stopped after step 3, mid-epoch
STOP_STEP, STEPS = 3, 12
RECIPE = ["seed=5", "model.dropout=0.3", "augment=noise_skew", "optim=adam", "scheduler=onecycle",
          "trainer.deterministic=true", "trainer.max_epochs=2", "status.stall_accuracy=0",
          "+callbacks.pause._target_=tests.helpers.PauseAtStep"]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("uninterrupted")
    write_tiny_mnist(root / "data")
    out = root / "run"
    proc = run_script("train.py", f"hydra.run.dir={out}", *tiny(root / "data"), *RECIPE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def signal_when_paused(proc: subprocess.Popen, marker: Path, sig: int) -> None:
    deadline = time.time() + 300
    # the file may exist before the id is in it
    while not (marker.exists() and marker.read_text().strip()) and proc.poll() is None \
            and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the run never reached the step to be stopped at"
    os.kill(int(marker.read_text()), sig)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_run_stopped_by_the_scheduler_continues_when_relaunched_in_its_folder(
        uninterrupted, tiny_data, tmp_path, sig):
    """SIGTERM (pre-emption) or SIGUSR1 (SLURM's warning before the time limit) mid-epoch: the
    run saves after the current batch and exits; the same command in the same folder continues
    from interrupted.ckpt and ends with the uninterrupted run's weights."""
    out, marker = tmp_path / "run", tmp_path / "paused"
    args = [f"hydra.run.dir={out}", *tiny(tiny_data), *RECIPE,
            f"+callbacks.pause.step={STOP_STEP}", f"+callbacks.pause.marker={marker}"]
    proc = subprocess.Popen(script_command("train.py", *args), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=script_env())
    signal_when_paused(proc, marker, sig)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig, output[-3000:]
    assert json.loads((out / "result.json").read_text())["status"] == "interrupted"
    ckpt = out / "checkpoints" / "interrupted.ckpt"
    assert torch.load(ckpt, weights_only=False)["global_step"] == STOP_STEP

    again = run_script("train.py", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "ok" and result["steps"] == STEPS
    assert result["resumed_from"] == str(ckpt)
    expected, got = weights(uninterrupted), weights(out)
    assert expected.keys() == got.keys()
    assert [k for k in expected if not torch.equal(expected[k], got[k])] == []


@needs_submitit
@pytest.mark.slow
def test_submitit_requeues_a_warned_job_into_its_folder_and_it_ends_as_uninterrupted(
        uninterrupted, tiny_data, tmp_path):
    """SIGUSR2 (what submitit asks SLURM to send before the time limit) to a job of a sweep on
    submitit's local executor: the job saves after the batch, submitit requeues it, and the
    requeued job continues in the same Hydra job folder to the uninterrupted run's weights."""
    sweep, marker = tmp_path / "sweep", tmp_path / "paused"
    proc = subprocess.Popen(
        script_command("train.py", "-m", "hydra/launcher=slurm_local", f"hydra.sweep.dir={sweep}",
                       *tiny(tiny_data), *RECIPE, f"+callbacks.pause.step={STOP_STEP}",
                       f"+callbacks.pause.marker={marker}"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=script_env())
    signal_when_paused(proc, marker, signal.SIGUSR2)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    job = sweep / "0"
    ckpt = job / "checkpoints" / "interrupted.ckpt"
    assert torch.load(ckpt, weights_only=False)["global_step"] == STOP_STEP
    log = "".join(p.read_text() for p in (sweep / ".submitit").glob("*/*_0_log.out"))
    assert "Caught signal SIGUSR2" in log and "Requeued job" in log
    assert log.count("Starting with JobEnvironment") == 2  # the job, then its requeue
    result = json.loads((job / "result.json").read_text())
    assert result["status"] == "ok" and result["steps"] == STEPS
    assert result["resumed_from"] == str(ckpt)
    expected, got = weights(uninterrupted), weights(job)
    assert [k for k in expected if not torch.equal(expected[k], got[k])] == []
