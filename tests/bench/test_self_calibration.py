"""bench.self_calibration on real galleries only (no DCGAN needed): the report and its promises."""

from __future__ import annotations

import json
from pathlib import Path

from bench import self_calibration


def test_real_galleries_report_stated_and_measured_fpir(tmp_path: Path) -> None:
    args = ["--real-sizes", "10,0", "--draws", "2", "--distractors", "", "--targets", "0.05", "--out", str(tmp_path)]
    report = self_calibration.main(args)
    saved = json.loads((tmp_path / "self_calibration.json").read_text())
    # ORL s1-s10 and the 18 people the service's detector (the cascade) finds in the fixtures' photos;
    # YuNet also reports a dark blob in sample1.jpg (score 0.65) as a 19th
    assert saved["detector"] == "cascade"
    assert saved["pool_identities"] == 28 and saved["strangers"] == [f"orl:s{i}" for i in range(11, 21)]
    assert not set(saved["calibrated_on"]) & set(saved["strangers"])
    results = report["results"]["0.05"]
    assert set(results) == {"real_10", "real_28"}
    assert results["real_10"]["record"]["draws"] == 2 and results["real_28"]["record"]["draws"] == 1
    for gallery in results.values():
        for name in self_calibration.POLICIES:
            row = gallery[name]
            low, high = row["stated_bounds"]
            assert 0 <= low <= row["stated_fpir"] <= high <= 0.05 + 1e-9, (name, row)
            assert row["measured_95"][0] <= row["measured_fpir"] <= row["measured_95"][1]
            assert row["verdict"] in {"within", "above", "below"}
        assert gallery["service"]["threshold_mean"] >= 0.4  # the 1:1 floor
        assert gallery["record"]["sources"] == ["gallery"]
    # All 28 people give 378 pairs of people: self-calibration decides.
    assert results["real_28"]["both"]["sources"] == ["gallery-self"]
    assert results["real_28"]["both"]["gallery_pairs"] > 1000
    assert (tmp_path / "self_calibration.png").stat().st_size > 0
