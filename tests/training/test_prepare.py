from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from service.vision.detect import YuNetDetector
from service.vision.upright import UprightDetector
from training.data.prepare import default_detector, prepare

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def detector() -> YuNetDetector:
    found = default_detector()
    assert isinstance(found, UprightDetector) and isinstance(found.inner, YuNetDetector)
    return found.inner


def _raw_tree(root: Path) -> Path:
    photos = FIXTURES / "photos"
    (root / "obama").mkdir(parents=True)
    (root / "biden").mkdir()
    (root / "crowd").mkdir()
    shutil.copy(photos / "obama.jpg", root / "obama" / "a.jpg")
    shutil.copy(photos / "obama2.jpg", root / "obama" / "b.jpg")
    shutil.copy(photos / "biden.jpg", root / "biden" / "a.jpg")
    (root / "biden" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    shutil.copy(photos / "t1.jpg", root / "crowd" / "group.jpg")
    import cv2

    cv2.imwrite(str(root / "crowd" / "wall.png"), np.full((200, 300, 3), 128, np.uint8))
    return root


def test_prepare_aligns_good_photos_and_reports_the_rest(tmp_path: Path, detector: YuNetDetector) -> None:
    src = _raw_tree(tmp_path / "raw")
    dst = tmp_path / "aligned"
    report = prepare(src, dst, detector, progress=False)

    assert (report.identities, report.photos, report.written) == (3, 6, 3)
    reasons = {r.path: r.reason for r in report.rejected}
    assert reasons == {
        "biden/broken.jpg": "unreadable",
        "crowd/group.jpg": "ambiguous",
        "crowd/wall.png": "no_face",
    }
    written = sorted(str(p.relative_to(dst)) for p in dst.rglob("*.png"))
    assert written == ["biden/a.png", "obama/a.png", "obama/b.png"]
    summary = json.loads((dst / "report.json").read_text())
    assert summary["rejected_by_reason"] == {"unreadable": 1, "ambiguous": 1, "no_face": 1}
    with open(dst / "rejected.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 3

    # Alignment puts the eyes where the ArcFace template has them: the same person's
    # two photos must then be closer under a real recogniser than two people are.
    from training.data.folder import read_crop
    from training.embedders import load_onnx_embedder

    crops = [read_crop(dst / p) for p in ("obama/a.png", "obama/b.png", "biden/a.png")]
    emb = load_onnx_embedder("builtin:sface").embed(crops)
    assert float(emb[0] @ emb[1]) > 0.5
    assert float(emb[0] @ emb[2]) < float(emb[0] @ emb[1]) - 0.2

    again = prepare(src, dst, detector, progress=False)
    assert (again.written, again.skipped_existing) == (0, 3)


def test_one_face_only_policy_rejects_any_second_face(tmp_path: Path, detector: YuNetDetector) -> None:
    src = tmp_path / "raw"
    (src / "p").mkdir(parents=True)
    shutil.copy(FIXTURES / "photos" / "sample1.jpg", src / "p" / "group.jpg")
    report = prepare(src, tmp_path / "out", detector, ambiguity_ratio=0.0, progress=False)
    assert [r.reason for r in report.rejected] == ["ambiguous"]
