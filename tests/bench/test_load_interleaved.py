"""bench.load's interleaved baseline: rounds of bare and server calls, and an honest verdict."""

from __future__ import annotations

import json
from pathlib import Path

from bench import load
from bench.common import FACE_640


def test_a_target_is_met_only_when_the_whole_spread_is_clear_of_it() -> None:
    assert load.judge([1.05, 1.10, 1.12], 1.15) == "met"
    assert load.judge([1.08, 1.34, 1.34], 1.15) == "undecided"
    assert load.judge([1.2, 1.3], 1.15) == "not met"
    assert load.judge([1.2], None) is None
    assert load.judge([1.72, 1.8], 1.7, at_least=True) == "met"
    assert load.judge([1.66, 1.75], 1.7, at_least=True) == "undecided"
    assert load.judge([0.8, 1.1], 1.7, at_least=True) == "not met"


def test_interleaved_rounds_against_a_server_it_starts(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    argv = ["--server", "--image", str(FACE_640), "--phone-photo", "1600x1200", "--clients", "1", "--requests", "2"]
    argv += ["--out", str(out)]
    rounds = ["--baseline", "--rounds", "2", "--round-calls", "3", "--target", "50"]
    load.main([*argv, *rounds, "--round-clients", "2", "--throughput-target", "0.05"])
    report = json.loads(out.read_text())["interleaved"]
    assert report["rounds"] == 2 and len(report["per_round"]) == 2
    assert all(r["bare_p50_ms"] > 0 and r["server_p50_ms"] > 0 for r in report["per_round"])
    assert report["ratio_spread"][0] <= report["ratio_median"] <= report["ratio_spread"][1]
    assert report["verdict"] == "met"  # HTTP and the database do not cost 50x the pipeline
    assert all(r["2_clients_rps"] > 0 and r["one_client_rps"] > 0 for r in report["per_round"])
    assert report["throughput_verdict"] == "met"  # two clients get at least 5% of one client's throughput
    # the 4-client tail and the phone photo, per round and judged against issue 4's 2x
    assert all(r["2_clients_p99_ms"] >= r["2_clients_p50_ms"] > 0 for r in report["per_round"])
    assert report["tail_ratio_spread"][0] <= report["tail_ratio_median"] <= report["tail_ratio_spread"][1]
    assert report["tail_verdict"] in {"met", "undecided", "not met"}
    assert all(r["large_p50_ms"] > 0 for r in report["per_round"])
    assert report["large_ratio_median"] > 0 and report["large_verdict"] in {"met", "undecided", "not met"}


def test_the_cost_of_checking_a_key_is_measured_round_by_round(tmp_path: Path) -> None:
    report = load.auth_overhead(3, 2, tmp_path / "server.log")
    assert len(report["per_round"]) == 2 and report["route"] == "GET /identities?limit=1"
    low, high = report["overhead_spread_ms"]
    assert low <= report["overhead_ms"] <= high
    assert all(r["p50_ms_with_auth"] > 0 and r["p50_ms_without_auth"] > 0 for r in report["per_round"])
    assert report["verdict"] in {"met", "undecided", "not met"}
