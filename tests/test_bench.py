"""scripts/bench.py --quick runs every case end to end (no timing assertions)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from tests.helpers import ROOT


def test_bench_quick_runs_every_case(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import bench

    out = tmp_path / "bench.json"
    results = bench.main(["--quick", "--out", str(out), "--cases", *sorted(bench.CASES)])
    saved = json.loads(out.read_text())
    assert set(saved) == set(bench.CASES) | {"machine"}
    assert set(saved["framework"]["ratios"]) == {"framework", "monitors_default",
                                                 "monitors_glorot"}
    assert saved["data"]["ratios"]["augmented_vs_per_image"] > 0
    assert saved["speedrun"]["runs"][0]["initlab_acc"] >= 0
    assert saved["startup"]["seconds"]["startup"] > 0
    assert results["compile"]["ratios"]["compile"] > 0
    assert saved["speedrun"]["training_s"] > 0 and "mean_acc >= 0.99" in saved["speedrun"]["goals"]
    assert saved["machine"]["device"] == "cpu" and saved["machine"]["torch"] == torch.__version__
    assert "bench" in sys.modules


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where CUDA is absent")
def test_bench_on_cuda_without_a_gpu_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import bench

    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--quick", "--device", "cuda", "--out", str(tmp_path / "bench.json")])
    assert exit_info.value.code == 2
    assert "--device cuda: torch" in capsys.readouterr().err
    assert not (tmp_path / "bench.json").exists()
