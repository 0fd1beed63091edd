import cv2
import numpy as np

from service.vision.decode import decode_image
from service.vision.detect import DetectorOptions, YuNetDetector, largest_face
from service.vision.models import load_detector_model
from tests.conftest import orl, photo


def test_finds_every_face_in_a_group_photo(detector: YuNetDetector) -> None:
    faces = detector.detect(decode_image(photo("t1.jpg")))
    assert len(faces) == 6
    areas = [f.area for f in faces]
    assert areas == sorted(areas, reverse=True)
    assert all(f.score > 0.6 for f in faces)


def test_landmarks_are_in_template_order(detector: YuNetDetector) -> None:
    face = largest_face(detector.detect(decode_image(photo("obama.jpg"))))
    assert face is not None
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    x1, y1, x2, y2 = face.box
    assert (face.landmarks[:, 0] > x1).all() and (face.landmarks[:, 0] < x2).all()
    assert (face.landmarks[:, 1] > y1).all() and (face.landmarks[:, 1] < y2).all()


def test_tight_crops_are_found_by_padding() -> None:
    detector = YuNetDetector(load_detector_model())
    found = [len(detector.detect(decode_image(orl(p, i)))) >= 1 for p in range(1, 21) for i in (1, 5, 9)]
    assert all(found)
    no_retry = YuNetDetector(load_detector_model(), DetectorOptions(pad_ratio=0.0))
    tight = np.asarray(decode_image(photo("Tom_Hanks_54745.png")))
    assert len(detector.detect(tight)) == 1
    assert len(no_retry.detect(tight)) <= len(detector.detect(tight))


def test_coordinates_map_back_from_the_reduced_detection_scale(detector: YuNetDetector) -> None:
    image = decode_image(photo("obama.jpg"))
    big = cv2.resize(image, None, fx=3.0, fy=3.0, interpolation=cv2.INTER_LINEAR)
    small_face = detector.detect(image)[0]
    big_face = detector.detect(big)[0]
    np.testing.assert_allclose(big_face.landmarks / 3.0, small_face.landmarks, atol=6.0)


def test_blank_image_has_no_face(detector: YuNetDetector) -> None:
    assert detector.detect(np.full((480, 640, 3), 127, np.uint8)) == []


def test_a_strip_too_thin_to_scale_is_not_a_crash(detector: YuNetDetector) -> None:
    """A 3000x2 photo scaled to a 640 long side would be 0 pixels high: detection must still run."""
    assert detector.detect(np.full((2, 3000, 3), 128, np.uint8)) == []
