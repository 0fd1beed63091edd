"""The degradation suite: its conditions do what they say, and a tiny run writes the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from bench import robustness
from service.vision.models import load_retinaface_model
from service.vision.retinaface import RetinaFaceDetector
from service.vision.upright import turn_back


@pytest.fixture(scope="module")
def subject() -> robustness.Subject:
    return robustness.orl_subject(3, 2, [RetinaFaceDetector(load_retinaface_model())])


def test_sunglasses_cover_the_eyes_and_leave_the_mouth(subject: robustness.Subject) -> None:
    probe = robustness.degrade(subject, "sunglasses", "k")
    (lx, ly), (mx, my) = subject.landmarks[0].round().astype(int), subject.landmarks[3].round().astype(int)
    assert probe.image[ly, lx].mean() < 45 < subject.image[ly, lx].mean()
    assert np.array_equal(probe.image[my, mx], subject.image[my, mx])


def test_mask_covers_the_mouth_and_leaves_the_eyes(subject: robustness.Subject) -> None:
    probe = robustness.degrade(subject, "mask", "k")
    mouth = subject.landmarks[3:].mean(axis=0).round().astype(int)
    eye = subject.landmarks[0].round().astype(int)
    assert not np.array_equal(probe.image[mouth[1], mouth[0]], subject.image[mouth[1], mouth[0]])
    assert np.array_equal(probe.image[eye[1], eye[0]], subject.image[eye[1], eye[0]])


def test_geometric_conditions_move_the_reference_with_the_face(subject: robustness.Subject) -> None:
    detector = RetinaFaceDetector(load_retinaface_model())
    for condition in ("rotation", "head_turn"):
        probe = robustness.degrade(subject, condition, "k")
        found = robustness.find(detector, probe)
        assert found is not None, condition
        iod = np.linalg.norm(subject.landmarks[1] - subject.landmarks[0])
        assert np.abs(found.landmarks[:2] - probe.landmarks[:2]).max() < 0.35 * iod, condition


def test_quarter_turns_are_all_met_and_kept_apart(subject: robustness.Subject) -> None:
    shapes = {robustness.degrade(subject, "quarter_turn", i).image.shape[:2] for i in range(12)}
    assert shapes == {subject.image.shape[:2], subject.image.shape[1::-1]}  # odd and even turns
    for i in range(6):
        probe = robustness.degrade(subject, "quarter_turn", i)
        turns = round(probe.strength * 3)
        back = turn_back(probe.landmarks, turns, probe.image.shape)
        assert np.abs(back - subject.landmarks).max() < 1e-3  # the reference points turned with the photo
    assert "quarter_turn" not in robustness.CONDITIONS  # never pooled with the ten


def test_strengths_are_mixed_and_seeded(subject: robustness.Subject) -> None:
    strengths = [robustness.degrade(subject, "blur", i).strength for i in range(40)]
    assert min(strengths) < 0.2 and max(strengths) > 0.8
    again = robustness.degrade(subject, "blur", 7)
    assert np.array_equal(again.image, robustness.degrade(subject, "blur", 7).image)


def test_a_tiny_run_reports_every_condition(tmp_path: Path) -> None:
    args = [
        "--systems",
        "retinaface",
        "--distractors",
        "0",
        "--limit",
        "4",
        "--face-free",
        "10",
        "--speed-rounds",
        "2",
        "--speed-repeat",
        "3",
        "--out",
        str(tmp_path),
    ]
    report = robustness.main(args)
    saved = json.loads((tmp_path / "robustness.json").read_text())
    assert (tmp_path / "robustness.png").stat().st_size > 0
    entry = saved["systems"]["retinaface"]
    assert set(entry["conditions"]) == set(robustness.CONDITIONS)
    clean = entry["conditions"]["clean"]
    assert clean["detection_recall"] == 1.0 and clean["rank1"] == 1.0
    assert clean["mated"] == 4 and clean["non_mated"] == 4
    assert clean["eyes_covered"] == 0.0 and entry["conditions"]["sunglasses"]["eyes_covered"] > 0.5
    assert entry["face_free"]["images"] == 10 and entry["face_free"]["with_a_detection"] == 0
    assert report["protocol"]["gallery_size"] == 11
    speed = entry["single_face_640x480"]
    assert speed["rounds"] == 2 and speed["cpu_ms"]["median"] > 0
    assert speed["wall_ms"]["spread"][0] <= speed["wall_ms"]["median"] <= speed["wall_ms"]["spread"][1]
    with np.load(tmp_path / "robustness_probes.npz") as probes:
        assert probes["retinaface/clean__quality"].shape == (8, robustness.MEASURES)


def test_sface_galleries_store_the_services_enrollment_templates(subject: robustness.Subject) -> None:
    from service.vision.align import align_face
    from service.vision.templates import TemplateBuilder

    systems = robustness.build_systems(["cascade", "cascade_plain"])
    assert systems["cascade"].templates and not systems["cascade_plain"].templates
    crops = np.stack([align_face(subject.image, subject.landmarks)])
    plain, template = TemplateBuilder(cast(Any, systems["cascade"].embedder)).build(list(crops))
    np.testing.assert_allclose(systems["cascade"].gallery_vectors(crops), template, atol=1e-6)
    np.testing.assert_allclose(systems["cascade_plain"].gallery_vectors(crops), plain, atol=1e-6)
