"""bench.own_model --latency-only: the models interleaved over rounds, each with its spread."""

from __future__ import annotations

import json
from pathlib import Path

from bench import own_model


def test_latency_rounds_report_each_model_with_its_spread(tmp_path: Path) -> None:
    own_model.main(["--latency-only", "--rounds", "2", "--repeat", "3", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "own_model_latency.json").read_text())
    assert report["rounds"] == 2 and report["calls_per_round"] == 3 and report["onnx_threads"] >= 1
    sface = report["latency"]["sface"]
    assert sface["batch1_spread"][0] <= sface["batch1_ms_per_face"] <= sface["batch1_spread"][1]
    assert sface["over_sface"] == 1.0 and sface["batch1_cpu_ms_per_face"] > 0
