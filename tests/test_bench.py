"""scripts/bench.py --quick runs every case end to end (no timing assertions)."""

from __future__ import annotations

import copy
import json
import sys

import pytest
import torch

from tests.helpers import ROOT


def test_bench_quick_runs_every_case(tmp_path, monkeypatch):
    """Every in-process case and startup (whole processes: the next test)."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import bench

    out = tmp_path / "bench.json"
    cases = sorted(set(bench.CASES) - {"whole"})
    results = bench.main(["--quick", "--out", str(out), "--cases", *cases])
    saved = json.loads(out.read_text())
    assert set(saved) == set(cases) | {"machine"}
    labels = {"framework", "lightning_alone", "lightning_barebones", "initlab_vs_lightning",
              "monitors_default", "monitors_glorot"}
    assert set(saved["framework"]["ratios"]) == labels
    framework = saved["framework"]
    assert framework["ratios"]["initlab_vs_lightning"] == pytest.approx(
        framework["ratios"]["framework"] / framework["ratios"]["lightning_alone"])
    for label in labels:
        low, high = framework["interval"][label]
        assert low <= high and framework["spread"][label] >= 0
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
    assert "bench" in sys.modules


def test_bench_quick_whole_processes(tmp_path, monkeypatch, capsys):
    """The whole-process case on tiny synthetic data: both commands and the plain reference ran
    as processes, and it reports the ratios, each run's breakdown and the startup figure."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import bench

    out = tmp_path / "bench.json"
    bench.main(["--quick", "--out", str(out), "--cases", "whole"])
    whole = json.loads(out.read_text())["whole"]
    per_command = {f"{kind}{name}{suffix}" for name in ("speedrun", "default")
                   for kind, suffix in (("whole_", ""), ("whole_", "_vs_initlab_settings"),
                                        ("", "_initlab_settings_vs_fastest"))}
    assert set(whole["ratios"]) == per_command | {"first_step_vs_floor",
                                                  "plain_glibc_defaults_vs_retained"}
    assert all(r > 0 for r in whole["ratios"].values())
    assert set(whole["ratio_spread"]) == per_command | {"plain_glibc_defaults_vs_retained"}
    # the plain script with initlab's settings: per-batch standardising, initlab's format
    assert "--no-normalize-once --channels-last" in " ".join(
        whole["plain_commands_initlab_settings"]["speedrun"])
    assert set(whole["plain_fit_page_faults"]) == {"retained", "glibc_defaults"}
    assert all(n >= 0 for n in whole["plain_fit_page_faults"].values())
    assert "experiment=speedrun seed=0" in whole["commands"]["speedrun"][0]
    assert "--betas 0.7 0.9 --pct-start 0.1 --seed 0" in whole["plain_commands"]["speedrun"][0]
    # the speedrun has no monitors or corrupted test sets, the default command both; 6 steps
    # end inside the first epoch, and a fit stopped there ends with one validation
    assert set(whole["breakdown"]["speedrun"]["initlab"]) == set(bench.BREAKDOWN) - {
        "probe", "robustness"}
    assert set(whole["breakdown"]["default"]["initlab"]) == set(bench.BREAKDOWN)
    assert list(whole["goals"]) == ["speedrun mean test accuracy >= 0.99 over seeds 0-0"]
    for name in ("speedrun", "default"):
        initlab, plain = whole["breakdown"][name]["initlab"], whole["breakdown"][name]["plain"]
        assert set(plain) == {"startup", "data_load", "build", "first_step", "fit", "validation",
                              "test", "total"}
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


def test_plain_reference_trains_the_same_in_its_fastest_and_initlab_settings(tiny_data,
                                                                             tmp_path):
    """Where the inputs are standardised and the memory format change speed, not what is
    learned."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import plain_train

    common = ["--data-dir", str(tiny_data), "--epochs", "1", "--batch-size", "32",
              "--channels", "4", "8", "--hidden", "16"]
    fastest = plain_train.main(common)
    other = plain_train.main([*common, "--normalize-once", "--no-channels-last"])
    assert not fastest["settings"]["normalize_once"] and fastest["settings"]["channels_last"]
    assert other["settings"]["normalize_once"] and not other["settings"]["channels_last"]
    assert fastest["test_acc"] == pytest.approx(other["test_acc"], abs=1 / 200 + 1e-9)
    assert fastest["steps"] == other["steps"] == -(-550 // 32)


def test_plain_reference_refuses_a_recipe_it_does_not_reproduce():
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench

    with pytest.raises(ValueError, match="optim._target_"):
        bench.plain_args(bench.compose_cfg("optim=sgd"), ROOT / "data")
    with pytest.raises(ValueError, match="augment"):
        bench.plain_args(bench.compose_cfg("augment=noise"), ROOT / "data")
    assert "--lr" in bench.plain_args(bench.compose_cfg("experiment=speedrun"), ROOT / "data")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where CUDA is absent")
def test_bench_on_cuda_without_a_gpu_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import bench

    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--quick", "--device", "cuda", "--out", str(tmp_path / "bench.json")])
    assert exit_info.value.code == 2
    assert "--device cuda: torch" in capsys.readouterr().err
    assert not (tmp_path / "bench.json").exists()


@pytest.mark.parametrize("minimal", [False, True])
@pytest.mark.parametrize("every", [5, 7, 25])
def test_paired_fit_times_every_step_once(tmp_path, monkeypatch, every, minimal):
    """The framework case's interleaving: every training step of the fit falls in exactly one
    timed segment, and the raw loop trains as many steps as the fit did, segment by segment,
    whether or not the cadence divides the step count."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    from hydra.utils import instantiate

    import bench

    data_dir = bench.synthetic_mnist(tmp_path / "data", 3000, 100)  # 22 batches of 128
    cfg = bench.compose_cfg(*bench.training_overrides(data_dir, 20, tmp_path / "out", quick=True),
                            "callbacks=none")
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    images, labels = datamodule.splits["train"]
    raw_loops = []
    monkeypatch.setattr(bench, "RawSteps", _recording(bench.RawSteps, raw_loops))
    fit = bench.paired_fit(cfg, datamodule, images, labels, every, minimal=minimal)
    expected = [every] * (20 // every) + ([20 % every] if 20 % every else [])
    assert fit["steps"] == expected and [r.done for r in raw_loops] == [20]
    assert len(fit["fit_s"]) == len(fit["raw_s"]) == len(expected)
    assert all(t > 0 for t in fit["fit_s"] + fit["raw_s"]) and fit["outside_s"] > 0
    assert bench.paired_ratio([fit]) == pytest.approx(
        (sum(fit["fit_s"]) + fit["outside_s"]) / sum(fit["raw_s"]))


def _recording(raw_steps, instances: list):
    """``bench.RawSteps``, with every raw loop it makes appended to ``instances``, holding a
    copy of its model's weights as it got them (``initial_weights``)."""
    def make(*args, **kwargs):
        instances.append(raw_steps(*args, **kwargs))
        instances[-1].initial_weights = copy.deepcopy(instances[-1].model.state_dict())
        return instances[-1]
    return make


@pytest.mark.parametrize(("callbacks", "minimal", "barebones"),
                         [("none", False, False), ("default", False, False), ("none", True, False),
                          ("none", True, True)])
def test_paired_raw_loop_trains_exactly_what_the_fit_trains(tmp_path, monkeypatch, callbacks,
                                                            minimal, barebones):
    """The framework case compares like with like: each fit's raw loop starts from the fit's
    initial weights and takes the same batches in the same order, so after 20 steps (not a
    multiple of the 7-step pairing) both models hold the same weights, moved from where they
    started; a raw loop given another data order ends elsewhere (the check can fail)."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    from hydra.utils import instantiate

    import bench

    data_dir = bench.synthetic_mnist(tmp_path / "data", 3000, 100)
    cfg = bench.compose_cfg(*bench.training_overrides(data_dir, 20, tmp_path / "out", quick=True),
                            f"callbacks={callbacks}")
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    images, labels = datamodule.splits["train"]
    raw_steps, raw_loops = bench.RawSteps, []
    monkeypatch.setattr(bench, "RawSteps", _recording(raw_steps, raw_loops))
    fit = bench.paired_fit(cfg, datamodule, images, labels, 7, minimal=minimal,
                           barebones=barebones)
    assert fit["max_weight_diff"] < 1e-6
    assert fit["trainer"].barebones == barebones
    trained = raw_loops[0].model.state_dict()
    assert max(float((initial - trained[name]).abs().max())
               for name, initial in raw_loops[0].initial_weights.items()) > 1e-3  # it trained

    def shuffled_raw_steps(model, optimizer, images, labels, batch_size, seed, scheduler=None):
        return raw_steps(model, optimizer, images, labels, batch_size, seed + 1, scheduler)

    monkeypatch.setattr(bench, "RawSteps", shuffled_raw_steps)
    other = bench.paired_fit(cfg, datamodule, images, labels, 7, minimal=minimal,
                             barebones=barebones)
    assert other["max_weight_diff"] > 1e-4


def test_speedrun_case_trains_each_seed_with_its_own_data_order(tmp_path, monkeypatch):
    """The in-process speedrun reads the data once but gives every seed a data module of its
    own seed, and each seed's raw loop trains exactly what its fit trains: the same weights
    after 40 steps (two epochs of 22 batches: the second epoch's order, and the one-cycle
    schedule, included); without the schedule the raw loop ends elsewhere."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import bench

    seen = []
    fit = bench.paired_fit

    def recording_fit(cfg, datamodule, *args, **kwargs):
        seen.append((cfg.seed, datamodule.seed, id(datamodule.splits["train"][0])))
        return fit(cfg, datamodule, *args, **kwargs)

    monkeypatch.setattr(bench, "paired_fit", recording_fit)
    speedrun = bench.main(["--quick", "--cases", "speedrun", "--out",
                           str(tmp_path / "bench.json")])["speedrun"]
    assert [(cfg_seed, data_seed) for cfg_seed, data_seed, _ in seen] == [(0, 0), (1, 1)]
    assert seen[0][2] == seen[1][2]  # the same tensors: read once
    assert [r["max_weight_diff"] < 1e-6 for r in speedrun["runs"]] == [True, True]
    assert [r["raw_acc"] for r in speedrun["runs"]] == pytest.approx(
        [r["initlab_acc"] for r in speedrun["runs"]], abs=1e-6)

    monkeypatch.setattr(bench, "build_scheduler", lambda *args, **kwargs: None)
    unscheduled = bench.main(["--quick", "--cases", "speedrun", "--seeds", "1", "--out",
                              str(tmp_path / "bench.json")])["speedrun"]
    assert unscheduled["runs"][0]["max_weight_diff"] > 1e-4
