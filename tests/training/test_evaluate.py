from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from training import evaluate
from training.data.folder import load_folder, sample_pairs
from training.data.images import encode_rgb
from training.data.prepare import default_detector, prepare
from training.data.verification_bin import write_bin

ORL = Path(__file__).resolve().parents[1] / "fixtures" / "orl"


@pytest.fixture(scope="module")
def orl_aligned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tmp_path_factory.mktemp("orl_raw")
    for person in [f"s{i}" for i in range(1, 9)]:
        (raw / person).mkdir()
        for n in range(1, 5):
            shutil.copy(ORL / person / f"{n}.pgm", raw / person / f"{n}.pgm")
    out = tmp_path_factory.mktemp("orl_aligned")
    report = prepare(raw, out, default_detector(), progress=False)
    assert report.written == 32
    return out


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    return evaluate.main(parser.parse_args(argv))


def test_eval_on_a_bin_and_a_folder_writes_report_and_plots(tmp_path: Path, orl_aligned: Path) -> None:
    crops, labels, _ = load_folder(orl_aligned)
    pairs, issame = sample_pairs(labels, 12, seed=1)
    bins = [encode_rgb(crops[int(i)]) for i in pairs.reshape(-1)]
    write_bin(tmp_path / "orl_pairs.bin", bins, issame.tolist())

    out = tmp_path / "report"
    argv = ["--manifest", "builtin:sface", "--bin", str(tmp_path / "orl_pairs.bin"), "--folder", str(orl_aligned)]
    assert _run([*argv, "--out", str(out), "--pairs", "200", "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    on_bin = report["datasets"]["orl_pairs"]["verification"]
    assert on_bin["pairs"] == 12
    # SFace separates ORL people well; an unaligned or mis-normalised pipeline would not.
    assert on_bin["accuracy"] > 0.9
    assert on_bin["auc"] > 0.95
    folder = report["datasets"][orl_aligned.name]
    assert folder["identities"] == 8
    assert folder["open_set"]["gallery_identities"] == 4
    assert folder["open_set"]["rank1"] > 0.9
    for name in ("roc.png", "det.png", "open_set_det.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_of_a_constant_model_is_at_chance(tmp_path: Path) -> None:
    class Constant:
        def embed(self, crops: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]:
            return np.tile(np.array([[1.0, 0.0]], np.float32), (len(crops), 1))

    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(40)]
    labels = np.repeat(np.arange(10), 4)
    result = evaluate.EvalResult()
    out = evaluate.evaluate_labelled(Constant(), "noise", crops, labels, evaluate.EvalOptions(progress=False), result)
    assert out["verification"]["auc"] == pytest.approx(0.5)
    assert out["verification"]["accuracy"] == pytest.approx(0.5, abs=0.05)
