"""Faces on their side or upside down (a photo whose EXIF orientation was stripped), found again
upright: real photos turned by quarter turns align like the upright photo."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from service.vision.align import ARCFACE_TEMPLATE, align_face
from service.vision.decode import decode_image
from service.vision.detect import Detector, Face, largest_face
from service.vision.detectors import build_detector
from service.vision.embed import OnnxEmbedder
from service.vision.models import load_embedder_model
from service.vision.pipeline import FacePipeline
from service.vision.quality import assess_image, pose
from service.vision.retinaface import RetinaFaceDetector
from service.vision.upright import (
    TURN_AT,
    UprightDetector,
    quarter_turns,
    turn_back,
    turned_crops,
    upright_faces,
)
from tests.conftest import orl, photo


@pytest.fixture(scope="module")
def detector() -> Detector:
    """The service's detector without its upright pass: what this module tests is that pass."""
    built = build_detector("cascade")
    assert isinstance(built, UprightDetector)
    return built.inner


@pytest.fixture(scope="module")
def scorer() -> RetinaFaceDetector:
    """What the service's upright pass asks whether a crop looks turned."""
    built = build_detector("cascade")
    assert isinstance(built, UprightDetector) and isinstance(built.scorer, RetinaFaceDetector)
    return built.scorer


def on_plain_background(data: bytes) -> np.ndarray:
    """A tight ORL crop (92x112) in the middle of a grey photo twice its size: a small face."""
    face = decode_image(data)
    h, w = face.shape[:2]
    image = np.full((2 * h, 2 * w, 3), 128, np.uint8)
    image[h // 2 : h // 2 + h, w // 2 : w // 2 + w] = face
    return image


@pytest.fixture(scope="module")
def embedder() -> OnnxEmbedder:
    manifest, model = load_embedder_model("builtin:sface")
    return OnnxEmbedder(manifest, model, providers=["CPUExecutionProvider"])


def face_in(detector: Detector, image: np.ndarray) -> Face:
    face = largest_face(upright_faces(detector, image, detector.detect(image)))
    assert face is not None
    return face


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_points_of_a_turned_image_map_back_exactly(turns: int) -> None:
    rng = np.random.default_rng(turns)
    image = np.zeros((37, 61), np.uint8)  # not square: the axes swap
    ys, xs = rng.integers(0, 37, 5), rng.integers(0, 61, 5)
    for i, (y, x) in enumerate(zip(ys, xs, strict=True)):
        image[y, x] = i + 1
    turned = np.rot90(image, turns)
    seen = np.array([np.argwhere(turned == i + 1)[0][::-1] for i in range(5)])  # (x, y) there
    assert np.array_equal(turn_back(seen, turns, turned.shape), np.stack([xs, ys], axis=1))


def test_the_turns_that_upright_a_face() -> None:
    assert [quarter_turns(r) for r in (-175.0, -85.0, -30.0, 0.0, 30.0, 85.0, 175.0)] == [2, 3, 0, 0, 0, 1, 2]


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_a_turned_real_photo_aligns_like_the_upright_one(
    detector: Detector, embedder: OnnxEmbedder, turns: int
) -> None:
    upright = decode_image(photo("obama2.jpg"))
    reference = face_in(detector, upright)
    turned = np.ascontiguousarray(np.rot90(upright, turns))
    first = largest_face(detector.detect(turned))
    assert first is not None and abs(pose(first.landmarks)[2]) >= TURN_AT  # the detector alone gets it wrong
    face = face_in(detector, turned)
    assert face.turns == quarter_turns(pose(face.landmarks)[2]) != 0
    # The same five points as the upright photo's, carried through the turn (a few pixels of a 120-pixel eye gap).
    expected = reference.landmarks.astype(np.float64)
    height, width = upright.shape[:2]
    for _ in range(turns):
        expected = np.stack([expected[:, 1], width - 1 - expected[:, 0]], axis=1)
        height, width = width, height
    assert np.abs(face.landmarks - expected).max() < 6.0
    same, crude = embedder.embed([align_face(upright, reference.landmarks), align_face(turned, face.landmarks)])
    wrong = embedder.embed([align_face(turned, first.landmarks)])[0]
    assert float(same @ crude) > 0.9 > float(same @ wrong) + 0.3
    quality = assess_image(turned, face)
    assert "rotated" not in quality.reasons and quality.for_recognition != "low"
    assert abs(abs(quality.roll) - 90.0 * min(turns, 4 - turns)) < 20.0  # the face's angle in the photo, as it is


def test_upright_faces_and_photos_without_turned_faces_are_left_as_they_are(
    detector: Detector, scorer: RetinaFaceDetector
) -> None:
    # group photos too: a clear upright face scores near 1 every way up, and is not taken as turned
    for data in (photo("sample1.jpg"), photo("sample3.jpg"), photo("t1.jpg"), orl(3, 4), photo("obama.jpg")):
        image = decode_image(data)
        faces = detector.detect(image)
        assert upright_faces(detector, image, faces) is faces
        assert upright_faces(detector, image, faces, scorer) is faces


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_a_crop_says_how_far_its_face_is_turned(detector: Detector, scorer: RetinaFaceDetector, turns: int) -> None:
    upright = decode_image(photo("biden.jpg"))
    crop = align_face(upright, face_in(detector, upright).landmarks)
    # a photo of a face turned by `turns`, with its five points placed as if it were upright (a
    # clear face upside down can still score high as it is: obama2's 0.87 against 0.99, which
    # the margin leaves alone; the detector gets such a face's roll right, and the roll tells)
    image = np.ascontiguousarray(np.rot90(crop, turns))
    face = Face(np.array([0, 0, 112, 112], np.float32), ARCFACE_TEMPLATE.copy(), 0.9)
    assert turned_crops(scorer, image, [face]) == [(4 - turns) % 4]
    assert turned_crops(scorer, image, []) == []


def test_small_upside_down_faces_are_turned_back_or_marked_misaligned(
    detector: Detector, scorer: RetinaFaceDetector, embedder: OnnxEmbedder
) -> None:
    """ORL faces (about 70 pixels wide) upside down: the detector often places their points as if
    they were upright, so their roll cannot tell, and their crops match nobody."""
    turned_back = misaligned = 0
    for person in range(1, 11):
        upright = on_plain_background(orl(person, 1))
        turned = np.ascontiguousarray(np.rot90(upright, 2))
        first = detector.detect(turned)
        if not first or abs(pose(first[0].landmarks)[2]) >= TURN_AT:
            continue  # not found, or found turned: the roll's part of the pass, tested above
        assert upright_faces(detector, turned, first) is first  # the roll alone cannot tell
        face = upright_faces(detector, turned, first, scorer)[0]
        assert face.turns == 2 or face.misaligned, person
        if face.misaligned:
            misaligned += 1
            assert assess_image(turned, face).abstains
            continue
        turned_back += 1
        reference = detector.detect(upright)[0]
        same, back = embedder.embed([align_face(upright, reference.landmarks), align_face(turned, face.landmarks)])
        wrong = embedder.embed([align_face(turned, first[0].landmarks)])[0]
        assert float(same @ back) > 0.9 > 0.5 > float(same @ wrong), person
    assert turned_back >= 7 and turned_back + misaligned >= 7


def test_the_pipeline_finds_faces_upright_in_a_turned_photo(detector: Detector) -> None:
    import io

    from PIL import Image

    turned = io.BytesIO()
    Image.open(io.BytesIO(photo("obama2.jpg"))).rotate(90, expand=True).save(turned, "JPEG", quality=92)
    _, faces = FacePipeline(UprightDetector(detector)).find(turned.getvalue())
    # The detector also draws a weak box (0.52) around the turned face; it goes with the turn.
    assert [f.turns for f in faces] == [3]
    assert len(detector.detect(decode_image(turned.getvalue()))) == 2


class CountingScorer:
    """The real scorer, counting the crops it is asked about."""

    def __init__(self, inner: RetinaFaceDetector) -> None:
        self.inner = inner
        self.views = 0

    def face_scores(self, images: np.ndarray) -> np.ndarray:
        self.views += len(images)
        return self.inner.face_scores(images)


def test_only_the_largest_faces_are_checked(detector: Detector, scorer: RetinaFaceDetector) -> None:
    """A crowd photo costs one check per face the service answers for, not one per face found."""
    image = decode_image(photo("t1.jpg"))
    faces = detector.detect(image)
    upright = [f for f in faces if abs(pose(f.landmarks)[2]) < TURN_AT]
    assert len(upright) > 3
    for most in (0, 1, 3, 1000):
        counting = CountingScorer(scorer)
        checked = UprightDetector(detector, counting, check_most=most).detect(image)
        assert [(f.box.tolist(), f.turns, f.misaligned) for f in checked] == [(f.box.tolist(), 0, False) for f in faces]
        assert counting.views == 4 * min(most, len(upright)), most
    # a small upside-down face beside a larger upright one: checked only when the bound reaches it
    small = np.ascontiguousarray(np.rot90(on_plain_background(orl(1, 1)), 2))
    large = cv2.resize(on_plain_background(orl(3, 1)), None, fx=1.5, fy=1.5)
    canvas = np.full((max(large.shape[0], small.shape[0]), large.shape[1] + small.shape[1], 3), 128, np.uint8)
    canvas[: large.shape[0], : large.shape[1]] = large
    canvas[: small.shape[0], large.shape[1] :] = small
    found = detector.detect(canvas)
    assert len(found) == 2 and not any(f.turns or f.misaligned for f in found)
    assert [f.turns for f in UprightDetector(detector, scorer, check_most=1).detect(canvas)] == [0, 0]
    assert [f.turns for f in UprightDetector(detector, scorer, check_most=2).detect(canvas)] == [0, 2]
