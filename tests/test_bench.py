"""The bench (initlab.bench, scripts/bench.py): every case runs end to end in its quick mode (no
timing assertions), the raw loops train exactly what the fits train, in the data module's batch
order, and the pairing statistics match their definitions."""

from __future__ import annotations

import copy
import gc
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from initlab.bench import Settings, pairing, run
from initlab.bench.baselines import RawSteps, build_minimal
from initlab.bench.cases import CASES, speedrun
from initlab.bench.cases.whole import BREAKDOWN, plain_args
from initlab.bench.common import compose_cfg, synthetic_mnist, training_overrides
from initlab.bench.timing import median_and_spread, summarize
from initlab.data import MNISTDataModule
from initlab.data.mnist import to_unit
from initlab.module import NVML_CUDA_CHECK
from tests.helpers import ROOT

QUICK = Settings(quick=True, rounds=1)  # what scripts/bench.py --quick runs with


@pytest.mark.slow  # whole processes or every case: CI runs it
def test_bench_quick_runs_every_case(tmp_path):
    """Every in-process case and startup (whole processes: the next tests)."""
    out = tmp_path / "bench.json"
    cases = sorted(set(CASES) - {"whole", "monitors"})
    results = run(cases, QUICK, out)
    saved = json.loads(out.read_text())
    assert set(saved) == set(cases) | {"machine"}
    labels = {"framework", "lightning_alone", "lightning_barebones", "initlab_vs_lightning",
              "monitors_default", "monitors_glorot"}
    assert set(saved["framework"]["ratios"]) == labels
    framework = saved["framework"]
    assert framework["ratios"]["initlab_vs_lightning"] == pytest.approx(
        framework["ratios"]["framework"] / framework["ratios"]["lightning_alone"])
    assert set(framework["interval"]) == set(framework["spread"]) == labels
    assert all(len(ratios) == 1 for ratios in framework["per_fit"].values())
    assert set(framework["max_weight_diff"]) == {"initlab", "monitors_default",
                                                 "monitors_glorot", "lightning", "barebones"}
    assert all(diff < 1e-6 for diff in framework["max_weight_diff"].values())
    assert saved["data"]["ratios"]["augmented_vs_per_image"] > 0
    assert [r["seed"] for r in saved["speedrun"]["runs"]] == [0, 1]
    assert saved["startup"]["seconds"]["startup"] > 0
    assert results["compile"]["ratios"]["compile"] > 0
    assert set(saved["formats"]["ratios"]) == {"batch256_channels_last_vs_first",
                                               "batch128_channels_last_vs_first"}
    assert all(v > 0 for v in saved["formats"]["seconds"].values())
    assert saved["speedrun"]["training_s"] > 0 and "mean_acc >= 0.99" in saved["speedrun"]["goals"]
    assert saved["machine"]["device"] == "cpu" and saved["machine"]["torch"] == torch.__version__


@pytest.mark.slow  # whole processes or every case: CI runs it
def test_bench_quick_monitors_on_the_default_command(tmp_path):
    """The default command with and without its monitors as whole processes: both ran, and
    the monitored one's result.json timed its probes."""
    result = run(["monitors"], QUICK, tmp_path / "bench.json")["monitors"]
    assert set(result["seconds"]) == {"callbacks_default", "callbacks_none"}
    assert result["ratios"]["monitors_default_command"] == pytest.approx(
        result["seconds"]["callbacks_default"] / result["seconds"]["callbacks_none"])
    assert result["probe_s"] > 0
    rounds = result["per_round"]  # what the medians are of: one entry a round
    assert rounds["ratio"] == [d / n for d, n in zip(rounds["callbacks_default_s"],
                                                     rounds["callbacks_none_s"])]
    assert len(rounds["probe_s"]) == QUICK.rounds and rounds["probe_s"][0] == result["probe_s"]


@pytest.mark.slow  # whole processes or every case: CI runs it
def test_bench_quick_whole_processes(tmp_path, capsys):
    """The whole-process case on tiny synthetic data: both commands and the plain reference ran
    as processes, and it reports the ratios, each run's breakdown and the startup figure."""
    out = tmp_path / "bench.json"
    run(["whole"], QUICK, out)
    whole = json.loads(out.read_text())["whole"]
    per_command = {f"{kind}{name}{suffix}" for name in ("speedrun", "default")
                   for kind, suffix in (("whole_", ""), ("whole_", "_vs_initlab_settings"),
                                        ("", "_initlab_settings_vs_fastest"))}
    plain_settings = {"plain_glibc_defaults_vs_retained", "plain_gc_defaults_vs_frozen"}
    # a corrupted set's cost against the plain script's same set and its clean test pass
    corrupted = {"default_corrupted_set_vs_plain_corrupted_set",
                 "default_corrupted_set_vs_plain_test"}
    assert set(whole["ratios"]) == (per_command | {"first_step_vs_floor"} | plain_settings
                                    | corrupted)
    assert all(r > 0 for r in whole["ratios"].values())
    assert set(whole["ratio_spread"]) == per_command | plain_settings | corrupted
    assert list(whole["corrupted_acc_max_diff"]) == ["default"]
    assert len(whole["corrupted_acc_max_diff"]["default"]) == 1
    # the plain script with initlab's settings: per-batch standardising, initlab's format
    assert "--no-normalize-once --channels-last" in " ".join(
        whole["plain_commands_initlab_settings"]["speedrun"])
    assert set(whole["plain_fit_page_faults"]) == {"retained", "glibc_defaults"}
    assert all(n >= 0 for n in whole["plain_fit_page_faults"].values())
    assert "experiment=speedrun seed=0" in whole["commands"]["speedrun"][0]
    assert "--betas 0.7 0.9 --pct-start 0.1 --seed 0" in whole["plain_commands"]["speedrun"][0]
    # the speedrun has no monitors or corrupted test sets, the default command both; 6 steps
    # end inside the first epoch, and a fit stopped there ends with one validation
    assert set(whole["breakdown"]["speedrun"]["initlab"]) == set(BREAKDOWN) - {
        "probe", "robustness"}
    assert set(whole["breakdown"]["default"]["initlab"]) == set(BREAKDOWN)
    assert list(whole["goals"]) == ["speedrun mean test accuracy >= 0.99 over seeds 0-0"]
    for name in ("speedrun", "default"):
        initlab, plain = whole["breakdown"][name]["initlab"], whole["breakdown"][name]["plain"]
        assert set(plain) == {"startup", "data_load", "build", "first_step", "fit", "validation",
                              "test", "total"} | ({"robustness"} if name == "default" else set())
        assert whole["test_acc_mean"][name]["plain"] == whole["test_acc"][name]["plain"][0]
        assert initlab["startup"] < initlab["first_step"] < initlab["total"]
        assert plain["startup"] < plain["first_step"] < plain["total"]
        assert whole["seconds"][name] > 0 and whole["seconds"][f"{name}_plain"] > 0
        assert len(whole["test_acc"][name]["plain"]) == 1
    startup = whole["startup"]
    assert startup["floor"] == startup["import_torch"] + startup["plain_data_load"] > 0
    printed = capsys.readouterr().out
    assert "whole_speedrun" in printed and "whole-process breakdown" in printed
    assert "first_step_vs_floor" in printed
    assert "default_corrupted_set_vs_plain_test" in printed
    assert "default: corrupted test sets, largest accuracy difference" in printed


@pytest.mark.slow  # whole processes or every case: CI runs it
def test_plain_reference_trains_the_same_in_its_fastest_and_initlab_settings(tiny_data,
                                                                             tmp_path):
    """Where the inputs are standardised and the memory format change speed, not what is
    learned. The plain reference is a standalone script: run as one."""
    def plain_train(*args: str) -> dict:
        out = tmp_path / f"plain-{len(list(tmp_path.glob('plain-*')))}.json"
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "plain_train.py"), *args,
                               "--json", str(out)], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(out.read_text())

    common = ["--data-dir", str(tiny_data), "--epochs", "1", "--batch-size", "32",
              "--channels", "4", "8", "--hidden", "16"]
    fastest = plain_train(*common)
    other = plain_train(*common, "--normalize-once", "--no-channels-last")
    assert not fastest["settings"]["normalize_once"] and fastest["settings"]["channels_last"]
    assert other["settings"]["normalize_once"] and not other["settings"]["channels_last"]
    assert fastest["test_acc"] == pytest.approx(other["test_acc"], abs=1 / 200 + 1e-9)
    assert fastest["steps"] == other["steps"] == -(-550 // 32)


def load_plain_train():
    """scripts/plain_train.py as a module (it is a standalone script, not in the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("plain_train",
                                                  ROOT / "scripts" / "plain_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seed", [0, 3])
def test_plain_reference_corrupts_the_test_set_as_initlab_does(tmp_path, seed):
    """The plain script's corrupted test sets hold initlab's images bit for bit (three chunks,
    the last one short; noise levels sharing one bank; level 0 the clean images), and another
    seed's differ."""
    plain = load_plain_train()
    data_dir = synthetic_mnist(tmp_path / "data", 600, 2500)
    datamodule = MNISTDataModule(data_dir=str(data_dir), eval_batch_size=256, seed=seed,
                                 verify=False, sources=["local"],
                                 corruptions={"noise": [0, 0.1, 0.5], "skew": [0, 10, 45]})
    datamodule.setup("test")
    images, _ = datamodule.splits["test"]
    banks = {}
    for name, corrupt in datamodule.corruptions.items():
        kind, level = name.split("/")[1].split("_")
        expected = torch.cat([x for x, _ in datamodule._corrupted(corrupt)])
        made = plain.corrupted(images, kind, float(level), seed, banks)
        assert torch.equal((made - plain.MEAN) / plain.STD, expected), name
        other = plain.corrupted(images, kind, float(level), seed + 1, {})
        assert torch.equal((other - plain.MEAN) / plain.STD, expected) == (level == "0"), name
    assert len(banks) == 1


@pytest.mark.slow  # a whole process
def test_plain_reference_reports_its_corrupted_sets(tiny_data, tmp_path):
    """--noise/--skew: one accuracy per level under initlab's metric names, timed apart from
    the clean test pass; a bad level is refused before anything runs."""
    script = [sys.executable, str(ROOT / "scripts" / "plain_train.py"), "--data-dir",
              str(tiny_data), "--epochs", "1", "--batch-size", "32", "--channels", "4", "8",
              "--hidden", "16"]
    out = tmp_path / "plain.json"
    proc = subprocess.run([*script, "--noise", "0.1", "0.5", "--skew", "10", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert list(result["corrupted_acc"]) == ["test_corrupt/noise_0.1", "test_corrupt/noise_0.5",
                                             "test_corrupt/skew_10"]
    assert all(0 <= acc <= 1 for acc in result["corrupted_acc"].values())
    assert result["phases_s"]["robustness"] > 0
    assert "corrupted test sets: noise_0.1" in proc.stdout
    refused = subprocess.run([*script, "--skew", "90"], capture_output=True, text=True,
                             timeout=600)
    assert refused.returncode == 2 and "--skew [90.0]" in refused.stderr
    assert "plain:" not in refused.stdout


def test_plain_reference_refuses_a_recipe_it_does_not_reproduce():
    with pytest.raises(ValueError, match="optim._target_"):
        plain_args(compose_cfg("optim=sgd"), ROOT / "data")
    with pytest.raises(ValueError, match="augment"):
        plain_args(compose_cfg("augment=noise"), ROOT / "data")
    assert "--lr" in plain_args(compose_cfg("experiment=speedrun"), ROOT / "data")


@pytest.mark.slow  # a whole process
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where CUDA is absent")
def test_bench_on_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    """The command line refuses before any case runs."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick",
                           "--device", "cuda", "--out", str(tmp_path / "bench.json")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert "--device cuda: torch" in proc.stderr and "[bench]" not in proc.stdout
    assert not (tmp_path / "bench.json").exists()


def twenty_step_fit(tmp_path, callbacks: str = "none"):
    """A 20-step fit's config on synthetic data (22 batches of 128), its data module set up,
    and the training split the raw loops slice."""
    data_dir = synthetic_mnist(tmp_path / "data", 3000, 100)
    cfg = compose_cfg(*training_overrides(data_dir, 20, tmp_path / "out", quick=True),
                      f"callbacks={callbacks}")
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    return (cfg, datamodule, *datamodule.splits["train"])


@pytest.mark.parametrize("minimal", [False, True])
@pytest.mark.parametrize("every", [5, 7, 25])
def test_paired_fit_times_every_step_once(tmp_path, monkeypatch, every, minimal):
    """The framework case's interleaving: every training step of the fit falls in exactly one
    timed segment, and the raw loop trains as many steps as the fit did, segment by segment,
    whether or not the cadence divides the step count."""
    cfg, datamodule, images, labels = twenty_step_fit(tmp_path)
    raw_loops = []
    monkeypatch.setattr(pairing, "RawSteps", _recording(RawSteps, raw_loops))
    fit = pairing.paired_fit(cfg, datamodule, images, labels, every, minimal=minimal)
    expected = [every] * (20 // every) + ([20 % every] if 20 % every else [])
    assert fit["steps"] == expected and [r.done for r in raw_loops] == [20]
    assert len(fit["fit_s"]) == len(fit["raw_s"]) == len(expected)
    assert all(t > 0 for t in fit["fit_s"] + fit["raw_s"]) and fit["outside_s"] > 0
    assert pairing.paired_ratio([fit]) == pytest.approx(
        (sum(fit["fit_s"]) + fit["outside_s"]) / sum(fit["raw_s"]))


@pytest.mark.parametrize("minimal", [False, True])
def test_the_raw_loop_runs_as_plain_torch_whatever_fit_it_is_paired_with(tmp_path, monkeypatch,
                                                                          minimal):
    """The baseline does not change with the variant: each raw segment runs without Lightning's
    NVML-based CUDA check (as a script importing torch alone does; initlab's fits unset it,
    a minimal module's keep it) and with the collector's long-lived objects frozen, as
    initlab.train.run fits; after the fit both are as they were."""
    monkeypatch.setenv(NVML_CUDA_CHECK, "1")  # as Lightning's import sets it
    cfg, datamodule, images, labels = twenty_step_fit(tmp_path)
    seen = []

    class Recording(RawSteps):
        def _train(self, steps):
            seen.append((os.environ.get(NVML_CUDA_CHECK), gc.get_freeze_count() > 0))
            return super()._train(steps)

    monkeypatch.setattr(pairing, "RawSteps", Recording)
    frozen_before = gc.get_freeze_count()
    fit = pairing.paired_fit(cfg, datamodule, images, labels, 7, minimal=minimal)
    assert fit["steps"] == [7, 7, 6] and seen == [(None, True)] * 3
    assert os.environ[NVML_CUDA_CHECK] == "1" and gc.get_freeze_count() == frozen_before


def _recording(raw_steps, instances: list):
    """``RawSteps``, with every raw loop it makes appended to ``instances``, holding a
    copy of its model's weights as it got them (``initial_weights``)."""
    def make(*args, **kwargs):
        instances.append(raw_steps(*args, **kwargs))
        instances[-1].initial_weights = copy.deepcopy(instances[-1].model.state_dict())
        return instances[-1]
    return make


@pytest.mark.parametrize("channels_last", ["auto", "true", "false"])
def test_the_minimal_module_trains_in_initlabs_memory_format(tmp_path, channels_last):
    """Lightning alone is measured on the steps initlab takes: the minimal module's CNN is in
    the memory format initlab's build puts it in (channels-last on the CPU under auto)."""
    from initlab.train import build

    data_dir = synthetic_mnist(tmp_path / "data", 300, 100)
    cfg = compose_cfg(*training_overrides(data_dir, 5, tmp_path / "out", quick=True),
                      f"channels_last={channels_last}")
    _, module, _ = build(cfg)
    minimal, _ = build_minimal(cfg, [])
    # conv2: conv1's single input channel is contiguous in either format
    formats = [m.model.conv2.weight.is_contiguous(memory_format=torch.channels_last)
               for m in (module, minimal)]
    assert formats == [module.channels_last] * 2
    assert module.channels_last == (channels_last != "false")  # the CPU: auto is channels-last


@pytest.mark.parametrize(("callbacks", "minimal", "barebones"),
                         [("none", False, False), ("default", False, False), ("none", True, False),
                          ("none", True, True)])
def test_paired_raw_loop_trains_exactly_what_the_fit_trains(tmp_path, monkeypatch, callbacks,
                                                            minimal, barebones):
    """The framework case compares like with like: each fit's raw loop starts from the fit's
    initial weights and takes the same batches in the same order, so after 20 steps (not a
    multiple of the 7-step pairing) both models hold the same weights, moved from where they
    started; a raw loop given another data order ends elsewhere (the check can fail)."""
    cfg, datamodule, images, labels = twenty_step_fit(tmp_path, callbacks)
    raw_loops = []
    monkeypatch.setattr(pairing, "RawSteps", _recording(RawSteps, raw_loops))
    fit = pairing.paired_fit(cfg, datamodule, images, labels, 7, minimal=minimal,
                           barebones=barebones)
    assert fit["max_weight_diff"] < 1e-6
    assert fit["trainer"].barebones == barebones
    trained = raw_loops[0].model.state_dict()
    assert max(float((initial - trained[name]).abs().max())
               for name, initial in raw_loops[0].initial_weights.items()) > 1e-3  # it trained

    def shuffled_raw_steps(model, optimizer, images, labels, batch_size, seed, scheduler=None):
        return RawSteps(model, optimizer, images, labels, batch_size, seed + 1, scheduler)

    monkeypatch.setattr(pairing, "RawSteps", shuffled_raw_steps)
    other = pairing.paired_fit(cfg, datamodule, images, labels, 7, minimal=minimal,
                             barebones=barebones)
    assert other["max_weight_diff"] > 1e-4


def test_speedrun_case_trains_each_seed_with_its_own_data_order(tmp_path, monkeypatch):
    """The in-process speedrun reads the data once but gives every seed a data module of its
    own seed, and each seed's raw loop trains exactly what its fit trains: the same weights
    after 40 steps (two epochs of 22 batches: the second epoch's order, and the one-cycle
    schedule, included); without the schedule the raw loop ends elsewhere."""
    seen = []
    fit = pairing.paired_fit

    def recording_fit(cfg, datamodule, *args, **kwargs):
        seen.append((cfg.seed, datamodule.seed, id(datamodule.splits["train"][0])))
        return fit(cfg, datamodule, *args, **kwargs)

    monkeypatch.setattr(speedrun, "paired_fit", recording_fit)
    figures = run(["speedrun"], QUICK, tmp_path / "bench.json")["speedrun"]
    assert [(cfg_seed, data_seed) for cfg_seed, data_seed, _ in seen] == [(0, 0), (1, 1)]
    assert seen[0][2] == seen[1][2]  # the same tensors: read once
    assert [r["max_weight_diff"] < 1e-6 for r in figures["runs"]] == [True, True]
    assert [r["raw_acc"] for r in figures["runs"]] == pytest.approx(
        [r["initlab_acc"] for r in figures["runs"]], abs=1e-6)

    monkeypatch.setattr(pairing, "build_scheduler", lambda *args, **kwargs: None)
    unscheduled = run(["speedrun"], Settings(quick=True, rounds=1, seeds=1),
                      tmp_path / "bench.json")["speedrun"]
    assert unscheduled["runs"][0]["max_weight_diff"] > 1e-4


@pytest.mark.parametrize("batch_size", [50, 128])  # 550 training examples: 50 divides, 128 not
def test_raw_loop_takes_the_data_modules_batches_in_its_order(tiny_data, batch_size):
    """The raw loop and the data module's training loader batch by one order: over two epochs
    (the second its own permutation), step k of the raw loop holds exactly the examples of the
    loader's k-th batch, the last, short batch included; another seed's order differs."""
    datamodule = MNISTDataModule(data_dir=str(tiny_data), verify=False, sources=["local"],
                                 batch_size=batch_size, seed=3)
    datamodule.setup()
    images, labels = datamodule.splits["train"]
    raw = RawSteps(None, None, images, labels, batch_size, seed=3)  # batches only: no training
    loader = datamodule.train_dataloader()
    assert len(loader) == raw.per_epoch == -(-len(labels) // batch_size)
    for epoch in (0, 1):
        loader.epoch = lambda epoch=epoch: epoch  # what the trainer's current epoch gives it
        for k, (x, y) in enumerate(loader):
            idx = raw.batch_indices(epoch * raw.per_epoch + k)
            assert torch.equal(x, datamodule.standardize(to_unit(images[idx])))
            assert torch.equal(y, labels[idx])
    assert len(idx) == len(labels) - (raw.per_epoch - 1) * batch_size  # the last batch
    assert not torch.equal(raw.batch_indices(0), raw.batch_indices(raw.per_epoch))
    other_seed = RawSteps(None, None, images, labels, batch_size, seed=4)
    assert not torch.equal(other_seed.batch_indices(0), raw.batch_indices(0))


def test_paired_statistics_follow_their_definitions():
    """The paired ratio is (fit seconds + seconds outside the segments) / raw seconds over all
    fits; a bootstrap resamples (fit, raw) pairs together, keeping the outside seconds."""
    fits = [{"fit_s": [1.0, 2.0], "raw_s": [1.0, 1.0], "outside_s": 1.0},
            {"fit_s": [3.0], "raw_s": [2.0], "outside_s": 0.5}]
    assert pairing.paired_ratio(fits) == pytest.approx((1 + 2 + 1 + 3 + 0.5) / (1 + 1 + 2))
    # pairs whose fit takes as long as its raw segment: every resampling of whole pairs gives
    # exactly 1, however unequal the pairs (resampling fit and raw apart would not)
    equal = pairing.bootstrap_ratios([{"fit_s": [1.0, 10.0], "raw_s": [1.0, 10.0],
                                       "outside_s": 0.0}])
    assert equal.shape == (2000,) and np.all(equal == 1.0)
    # four pairs of 3 s fit and 1 s raw, 2 s outside: (4 * 3 + 2) / (4 * 1), whatever is drawn
    assert np.allclose(pairing.bootstrap_ratios(
        [{"fit_s": [3.0] * 4, "raw_s": [1.0] * 4, "outside_s": 2.0}]), (4 * 3 + 2) / 4)
    # fit segments of 1 s and 3 s against 1 s raw: a resample of two pairs is 1, 2 or 3 with
    # probabilities 1/4, 1/2, 1/4, so its 2.5% and 97.5% quantiles are 1 and 3
    mixed = pairing.bootstrap_ratios([{"fit_s": [1.0, 3.0], "raw_s": [1.0, 1.0],
                                       "outside_s": 0.0}])
    assert set(np.unique(mixed)) == {1.0, 2.0, 3.0}
    assert abs(np.mean(mixed == 2.0) - 0.5) < 0.05
    assert pairing.interval95(mixed) == [1.0, 3.0]
    # numpy's linear quantiles of 0..1000: the 25th and 975th values
    assert pairing.interval95(np.arange(1001.0)) == [25.0, 975.0]


def test_medians_spreads_and_ratios_of_interleaved_rounds():
    """Spread is max/min - 1; a ratio is of the variants' medians."""
    assert median_and_spread([2.0, 1.0, 4.0]) == (2.0, 4.0 / 1.0 - 1)
    summary = summarize({"a": [2.0, 6.0, 3.0], "b": [1.0, 1.5, 1.2]}, 10, {"a_vs_b": ("a", "b")})
    assert summary["seconds"] == {"a": 3.0, "b": 1.2}
    assert summary["spread"] == pytest.approx({"a": 2.0, "b": 0.5})
    assert summary["ratios"]["a_vs_b"] == pytest.approx(3.0 / 1.2)
    assert summary["steps"] == 10
