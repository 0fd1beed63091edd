"""`bench.margins` trains every variant it is given, evaluates each on every validation folder, and ranks them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")

from bench import margins
from training.data.prepare import default_detector, prepare

ORL = Path(__file__).resolve().parents[1] / "fixtures" / "orl"


def _aligned(people: range, raw: Path, out: Path) -> Path:
    for i in people:
        shutil.copytree(ORL / f"s{i}", raw / f"s{i}")
    prepare(raw, out, default_detector(), progress=False)
    return out


def test_margins_trains_each_variant_and_ranks_them_on_validation(tmp_path: Path) -> None:
    train = _aligned(range(1, 5), tmp_path / "raw_train", tmp_path / "train")
    val = _aligned(range(5, 9), tmp_path / "raw_val", tmp_path / "val")
    sets = [
        f"data.root={train}",
        f"data.val_pairs={val}",
        "data.batch_size=8",
        f"run.out_dir={tmp_path / 'runs'}",
        "run.precise_bn_batches=2",
        "run.log_every=1",
        "run.checkpoint_every=100",
        "distill.weight=0.0",
    ]
    argv = ["--variants", "arcface", "cosface", "--val", str(val), "--out", str(tmp_path / "out")]
    for item in sets:
        argv += ["--set", item]
    report = margins.main(argv)

    assert set(report["variants"]) == {"arcface", "cosface"}
    for name, result in report["variants"].items():
        assert (tmp_path / "runs" / f"margins_{name}").is_dir()
        scores = result["val"]
        assert 0.0 <= scores["auc"] <= 1.0
        assert scores["pairs"] > 0
        assert result["train_images_per_s"] > 0
    assert report["best"] == max(report["variants"], key=lambda n: report["variants"][n]["val"]["auc"])
    saved = json.loads((tmp_path / "out" / "margins.json").read_text())
    assert saved["variants"]["cosface"]["overrides"] == ["head.name=cosface", "head.margin=0.3"]
    assert (tmp_path / "out" / "margins.png").read_bytes()[:4] == b"\x89PNG"

    # A second call finds both runs finished: nothing is trained again, the scores are the same.
    again = margins.main(argv)
    for name in ("arcface", "cosface"):
        assert again["variants"][name]["val"]["auc"] == pytest.approx(report["variants"][name]["val"]["auc"])
