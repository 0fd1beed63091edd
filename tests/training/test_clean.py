from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from training.data import clean
from training.data.folder import scan_folder
from training.data.prepare import default_detector, prepare

ORL = Path(__file__).resolve().parents[1] / "fixtures" / "orl"


@pytest.fixture(scope="module")
def aligned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tmp_path_factory.mktemp("raw")
    for person in (1, 2, 3, 4):
        (raw / f"s{person}").mkdir()
        for n in range(1, 6):
            shutil.copy(ORL / f"s{person}" / f"{n}.pgm", raw / f"s{person}" / f"{n}.pgm")
    out = tmp_path_factory.mktemp("aligned")
    assert prepare(raw, out, default_detector(), progress=False).written == 20
    return out


def _dirty_copy(aligned: Path, root: Path) -> Path:
    shutil.copytree(aligned, root)
    # Two photos of s2 filed under s1 (label noise), and s4 split into two "people".
    shutil.copy(aligned / "s2" / "1.png", root / "s1" / "intruder_a.png")
    shutil.copy(aligned / "s2" / "2.png", root / "s1" / "intruder_b.png")
    (root / "s4_again").mkdir()
    for name in ("4.png", "5.png"):
        shutil.move(root / "s4" / name, root / "s4_again" / name)
    return root


def test_clean_drops_intruders_and_merges_a_split_identity(tmp_path: Path, aligned: Path) -> None:
    src = _dirty_copy(aligned, tmp_path / "dirty")
    parser = argparse.ArgumentParser()
    clean.add_arguments(parser)
    out = tmp_path / "clean"
    argv = [str(src), "--manifest", "builtin:sface", "--out", str(out), "--merge-threshold", "0.6", "--no-progress"]
    assert clean.main(parser.parse_args(argv)) == 0

    report = json.loads((out / "clean_report.json").read_text())
    assert report["options"]["threshold"] == pytest.approx(0.40)  # SFace's calibrated threshold
    assert sorted(d["path"] for d in report["dropped"]) == ["s1/intruder_a.png", "s1/intruder_b.png"]
    assert report["close_group_names"] == [["s4", "s4_again"]]
    classes, samples = scan_folder(out)
    assert classes == ["s1", "s2", "s3", "s4"]
    assert len(samples) == 20
    assert sorted(p.name for p in (out / "s4").iterdir()) == [
        "1.png",
        "2.png",
        "3.png",
        "s4_again__4.png",
        "s4_again__5.png",
    ]
    assert report["nearest_centre_quantiles"]["q100"] > 0.6  # s4 and s4_again, before the merge
    assert (out / "clean_report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list(out.glob(".teacher-*.npy"))) == 1  # the distillation cache, by default

    bare = tmp_path / "clean_no_cache"
    argv = [str(src), "--manifest", "builtin:sface", "--out", str(bare), "--no-teacher-cache", "--no-progress"]
    assert clean.main(parser.parse_args(argv)) == 0
    assert not list(bare.glob(".teacher-*.npy"))


def test_cleaned_copy_carries_the_teacher_embeddings_distillation_would_compute(tmp_path: Path, aligned: Path) -> None:
    from training.distill import cache_path
    from training.embedders import embed_all, load_onnx_embedder

    src = _dirty_copy(aligned, tmp_path / "dirty")
    out = tmp_path / "clean"
    embedder = load_onnx_embedder("builtin:sface")
    options = clean.CleanOptions(threshold=0.4, merge_threshold=0.6)
    clean.clean_folder(src, embedder, options, dst=out, teacher_ref="builtin:sface", progress=False)
    _, samples = scan_folder(out)
    cached = np.load(cache_path(out, samples, "builtin:sface"))
    fresh = embed_all(embedder, [clean.read_crop(path) for path, _ in samples], batch_size=7)
    assert cached.shape == (20, 128) and cached.dtype == np.float32
    np.testing.assert_allclose(cached, fresh, atol=1e-4)


def test_centre_is_robust_to_outliers() -> None:
    rng = np.random.default_rng(0)
    direction = np.eye(8, dtype=np.float32)[0]
    good = direction + 0.1 * rng.standard_normal((6, 8)).astype(np.float32)
    bad = np.eye(8, dtype=np.float32)[[1, 2, 3]]
    emb = np.concatenate([good, bad])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    cosines, keep = clean.centre_cosines(emb, threshold=0.5)
    assert keep.tolist() == [True] * 6 + [False] * 3
    assert cosines[:6].min() > 0.9  # the second pass centres on the six, not on all nine


def test_groups_are_transitive() -> None:
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([np.cos(0.5), np.sin(0.5), 0.0])
    c = np.array([np.cos(1.0), np.sin(1.0), 0.0])
    d = np.array([0.0, 0.0, 1.0])
    centres = np.stack([a, b, c, d]).astype(np.float32)
    # a~b and b~c at cos(0.5) = 0.88, a and c only cos(1.0) = 0.54: still one group.
    assert clean.group_close_centres(centres, 0.8) == [[0, 1, 2]]
    assert clean.group_close_centres(centres, 0.95) == []
