"""scripts/bench.py --quick runs every case end to end (no timing assertions)."""

from __future__ import annotations

import json
import sys

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
    assert "bench" in sys.modules
