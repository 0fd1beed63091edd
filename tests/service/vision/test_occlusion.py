"""Occlusion of the eyes and the mouth on real photos: none on clean faces (ORL's glasses
wearers included), and covered regions found when sunglasses or a mask are put on a real face.
The occluders (`tests.occluders`) are drawn unlike bench.robustness's, whose flat fills
calibrated the rule."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from service.vision.align import align_face
from service.vision.decode import decode_image
from service.vision.detect import Detector, Face, largest_face
from service.vision.detectors import build_detector
from service.vision.occlusion import COVERED, occlusion
from service.vision.quality import assess_image
from tests.conftest import orl, photo
from tests.occluders import cloth_mask, sunglasses


@pytest.fixture(scope="module")
def detector() -> Detector:
    return build_detector("cascade")


def face_of(detector: Detector, image: NDArray[np.uint8]) -> Face:
    face = largest_face(detector.detect(image))
    assert face is not None
    return face


def test_no_clean_real_face_is_covered(detector: Detector) -> None:
    """ORL s1-s20 (every photo: several wear clear glasses, several have beards) and every face
    of the fixtures' photos, group photos included."""
    scores = []
    for person in range(1, 21):
        for n in range(1, 11):
            image = decode_image(orl(person, n))
            scores += [occlusion(align_face(image, f.landmarks)) for f in detector.detect(image)]
    for name in ("obama.jpg", "obama2.jpg", "biden.jpg", "Tom_Hanks_54745.png", "t1.jpg", "sample1.jpg"):
        image = decode_image(photo(name))
        scores += [occlusion(align_face(image, f.landmarks)) for f in detector.detect(image)]
    assert len(scores) >= 210
    assert [s for s in scores if s.covered] == []


@pytest.mark.parametrize("name", ["obama.jpg", "biden.jpg"])
def test_sunglasses_cover_the_eyes_and_make_the_face_low(detector: Detector, name: str) -> None:
    image = decode_image(photo(name))
    face = face_of(detector, image)
    covered = sunglasses(image, face)
    found = face_of(detector, covered)  # the cascade still finds and aligns it
    quality = assess_image(covered, found)
    assert quality.occlusion.eyes >= COVERED and quality.occlusion.mouth < COVERED, quality.occlusion
    assert quality.for_recognition == "low" and "eyes_covered" in quality.reasons
    assert assess_image(image, face).occlusion.eyes == 0.0


@pytest.mark.parametrize("name", ["obama.jpg", "biden.jpg"])
def test_a_mask_covers_the_mouth_and_keeps_the_face_from_high(detector: Detector, name: str) -> None:
    image = decode_image(photo(name))
    face = face_of(detector, image)
    masked = cloth_mask(image, face)
    found = face_of(detector, masked)
    quality = assess_image(masked, found)
    assert quality.occlusion.mouth >= COVERED and quality.occlusion.eyes < COVERED, quality.occlusion
    assert quality.for_recognition != "high" and "mouth_covered" in quality.reasons


def test_most_real_faces_are_found_covered_under_occluders_unlike_the_suites(detector: Detector) -> None:
    """The rates the README states for occluders drawn unlike the calibration suite's, on ORL
    s1-s20 (two photos each, set on a plain background as small faces: about 30 px between the
    eyes) and the fixtures' portraits."""
    images = []
    for person in range(1, 21):
        for n in (1, 5):
            face = decode_image(orl(person, n))
            canvas = np.full((face.shape[0] * 2, face.shape[1] * 2, 3), 128, np.uint8)
            canvas[56 : 56 + face.shape[0], 46 : 46 + face.shape[1]] = face
            images.append(canvas)
    images += [decode_image(photo(name)) for name in ("obama.jpg", "obama2.jpg", "biden.jpg", "Tom_Hanks_54745.png")]
    eyes, mouths = [], []
    for i, image in enumerate(images):
        face = face_of(detector, image)
        for draw, into in ((sunglasses, eyes), (cloth_mask, mouths)):
            covered = draw(image, face, seed=i)
            found = largest_face(detector.detect(covered))
            if found is not None:
                into.append(occlusion(align_face(covered, found.landmarks)))
    assert len(eyes) >= 40 and len(mouths) >= 40
    eyes_rate = np.mean([o.eyes >= COVERED for o in eyes])
    mouth_rate = np.mean([o.mouth >= COVERED for o in mouths])
    print(f"eyes covered {eyes_rate:.3f} of {len(eyes)}, mouth covered {mouth_rate:.3f} of {len(mouths)}")
    assert eyes_rate >= 0.85 and mouth_rate >= 0.6
    assert np.mean([o.mouth >= COVERED for o in eyes]) == 0 and np.mean([o.eyes >= COVERED for o in mouths]) <= 0.05
