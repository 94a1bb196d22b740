"""The same commands on CUDA. Every test here is marked ``gpu``: skipped, with the reason, where
CUDA is absent (tests/conftest.py). ``pytest -m gpu`` runs them all, the real-MNIST one included
(it needs data/MNIST/raw or a source to fetch it from)."""

from __future__ import annotations

import json
import warnings

import lightning as L
import pytest
import torch

from initlab import bench
from initlab.bench.cases import DEFAULT_CASES
from initlab.train import build, run
from tests.helpers import (
    CORRUPT_KEYS,
    assert_resume_after_two_epochs_matches,
    checkpoint_test_accuracy,
    run_script,
)

pytestmark = pytest.mark.gpu
GPU = "trainer.accelerator=gpu"


def _merged(per_loader: list[dict]) -> dict[str, float]:
    return {k: float(v) for metrics in per_loader for k, v in metrics.items()}


@pytest.mark.real_data
def test_the_main_command_for_one_epoch_on_cuda(tmp_path):
    """README's command (monitors, test and robustness on) on the GPU, one epoch."""
    out = tmp_path / "run"
    proc = run_script("train.py", f"hydra.run.dir={out}", GPU, "trainer.max_epochs=1",
                      "trainer.enable_progress_bar=false", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "ok", result.get("error")
    assert result["metrics"]["test/acc"] >= 0.985
    assert CORRUPT_KEYS <= set(result["metrics"])
    assert result["metrics"]["test_corrupt/noise_0.1/acc"] > 0.9
    assert (out / "init_stats.json").exists() and "test accuracy: " in proc.stdout


@pytest.fixture
def full_fp32():
    """Comparisons with CPU numbers run the GPU in full float32: cuDNN convolutions use TF32
    by default on Ampere and later (10 mantissa bits), and matmuls may be set to."""
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def test_step0_statistics_of_the_paper_mlp_on_cuda_equal_the_cpu_ones(make_cfg, tmp_path,
                                                                      full_fp32):
    """The 5 x 1000 tanh MLP, xavier, raw pixels: init_stats.json from a CPU and a CUDA run of
    the same seed (the weights are drawn on the CPU in both), the GPU in full float32."""
    paper = ["model=mlp", "model.depth=5", "model.width=1000", "model.activation=tanh",
             "init=xavier", "data.normalize=false", "callbacks=default", "trainer.max_steps=1",
             "test=false"]
    layers = {}
    for accelerator in ("cpu", "gpu"):
        out = tmp_path / accelerator
        run(make_cfg(*paper, f"trainer.accelerator={accelerator}", f"output_dir={out}"))
        layers[accelerator] = json.loads((out / "init_stats.json").read_text())["layers"]
    cpu, gpu = layers["cpu"], layers["gpu"]
    assert list(cpu) == list(gpu) == ["fc1", "fc2", "fc3", "fc4", "fc5", "out"]
    assert "jacobian_mean_sv" in cpu["fc3"]
    for layer, stats in cpu.items():
        assert set(gpu[layer]) == set(stats), layer
        for key, value in stats.items():
            # float32 sums in another order; a unit right at the 0.97 threshold may flip
            abs_tol = 1e-3 if key == "activation_saturated" else 1e-6
            assert gpu[layer][key] == pytest.approx(value, rel=1e-3, abs=abs_tol), (layer, key)


def test_the_cnn_in_bf16_mixed_and_channels_last_on_cuda(make_cfg):
    cfg = make_cfg(GPU, "trainer.precision=bf16-mixed", "channels_last=true",
                   "model.channels=[24,32]", "model.hidden=256", "data.train_samples=null",
                   "trainer.max_epochs=4")
    datamodule, module, trainer = build(cfg)
    seen = set()
    module.model.conv2.register_forward_hook(
        lambda layer, args, out: seen.add((out.device.type, out.dtype,
                                           out.is_contiguous(memory_format=torch.channels_last))))
    trainer.fit(module, datamodule=datamodule)
    assert seen == {("cuda", torch.bfloat16, True)}
    metrics = _merged(trainer.test(module, datamodule=datamodule, verbose=False))
    assert metrics["test/acc"] > 0.9 and CORRUPT_KEYS <= set(metrics)
    # after a stage Lightning has moved the model to the CPU; the data module's splits follow
    assert module.device.type == "cpu"
    assert {t.device.type for split in datamodule.splits.values() for t in split} == {"cpu"}
    assert module.model.conv2.weight.is_contiguous(memory_format=torch.channels_last)


class StepMarks(L.Callback):
    """Where each training step starts in a list of recorded warnings."""

    def __init__(self, recorded: list):
        # not self.log: Lightning binds the module's log() onto every callback
        self.recorded, self.marks = recorded, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.marks.append((trainer.global_step, len(self.recorded)))

    def steps_with_syncs(self) -> list[int]:
        ends = [start for _, start in self.marks[1:]] + [len(self.recorded)]
        return [step for (step, start), end in zip(self.marks, ends)
                if any("synchroniz" in str(w.message) for w in self.recorded[start:end])]


def test_monitors_at_the_glorot_cadence_do_not_sync_every_step(make_cfg):
    """torch.cuda.set_sync_debug_mode warns at every host sync: count the steps that have one."""
    steps = 200
    cfg = make_cfg(GPU, "callbacks=glorot", "data.batch_size=2", "data.train_samples=null",
                   f"trainer.max_steps={steps}", "trainer.limit_val_batches=0",
                   "trainer.log_every_n_steps=50")
    assert cfg.callbacks.probe.every_n_steps == cfg.callbacks.update_ratio.every_n_steps == 50
    assert cfg.status.check_every_n_steps == 50
    datamodule, module, trainer = build(cfg)
    with warnings.catch_warnings(record=True) as log:
        warnings.simplefilter("always")
        marks = StepMarks(log)
        trainer.callbacks.append(marks)
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.fit(module, datamodule=datamodule)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    synced = marks.steps_with_syncs()
    assert len(marks.marks) == steps
    # the probe reads its statistics on its steps: no sync seen at all means a blind counter
    assert synced, "no host sync recorded: set_sync_debug_mode warnings did not reach Python"
    assert len(synced) <= steps // 10, f"host syncs at steps {synced}"


@pytest.mark.slow
def test_ddp_on_one_gpu(tiny_data, tmp_path):
    """Trained in TF32 (the process's defaults), evaluated on the CPU in float32: hence the
    one-example tolerance."""
    out = tmp_path / "ddp"
    # trainer=ddp as it is: devices=auto is this machine's one GPU (not 2, as it once asked)
    proc = run_script("train.py", "trainer=ddp", GPU, f"hydra.run.dir={out}",
                      f"data.data_dir={tiny_data}", "data.verify=false", "data.sources=[local]",
                      "data.batch_size=16", "model.channels=[4,8]", "model.hidden=16",
                      "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
                      "callbacks=default", "status.stall_accuracy=0", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "ok", result.get("error")
    assert result["steps"] == 2 * -(-550 // 16)
    assert CORRUPT_KEYS <= set(result["metrics"])
    assert (out / "init_stats.json").exists()
    accuracy = checkpoint_test_accuracy(out / "checkpoints" / "last.ckpt", tiny_data,
                                        channels=(4, 8), hidden=16)
    # the same weights on the CPU: at most one borderline example of the 200 may flip
    assert result["metrics"]["test/acc"] == pytest.approx(accuracy, abs=1 / 200 + 1e-9)


@pytest.fixture
def restore_determinism():
    """trainer.deterministic=true sets process-wide flags; leave them as they were."""
    flags = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
    torch.backends.cudnn.benchmark = flags[2]


def test_resume_on_cuda_ends_like_an_uninterrupted_run(make_cfg, tmp_path, monkeypatch,
                                                       restore_determinism):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's deterministic mode
    first = assert_resume_after_two_epochs_matches(make_cfg, tmp_path, GPU)
    checkpoint = torch.load(first / "checkpoints" / "last.ckpt", map_location="cpu",
                            weights_only=False)
    assert "cuda" in checkpoint["rng_states"]  # dropout's CUDA generator resumes too


@pytest.mark.slow
def test_bench_quick_on_cuda_writes_gpu_figures(tmp_path):
    out = tmp_path / "bench.json"
    bench.run(DEFAULT_CASES, bench.Settings(quick=True, rounds=1, device="cuda"), out)
    saved = json.loads(out.read_text())
    machine = saved["machine"]
    assert machine["device"] == "cuda" and machine["torch"] == torch.__version__
    assert machine["gpu"] == torch.cuda.get_device_name(0) and machine["driver"]
    assert set(saved) == set(DEFAULT_CASES) | {"machine"}
    assert saved["speedrun"]["training_s"] > 0
    assert "training_s <= 2" in saved["speedrun"]["goals"]
