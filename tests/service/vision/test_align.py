import cv2
import numpy as np
import pytest

from service.vision.align import ARCFACE_TEMPLATE, align_face, similarity_transform, template_for


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def test_similarity_transform_recovers_a_known_transform() -> None:
    angle, scale, shift = np.deg2rad(23.0), 2.7, np.array([31.0, -12.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = ARCFACE_TEMPLATE.astype(np.float64)
    dst = src @ rot.T + shift
    matrix = similarity_transform(src, dst)
    np.testing.assert_allclose(matrix[:, :2], rot, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)


def test_similarity_transform_never_reflects() -> None:
    src = ARCFACE_TEMPLATE.astype(np.float64)
    mirrored = src * np.array([-1.0, 1.0])
    matrix = similarity_transform(src, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_similarity_transform_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="point sets"):
        similarity_transform(np.zeros((5, 2)), np.zeros((4, 2)))


def test_aligned_landmarks_land_on_the_template() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (400, 300, 3), dtype=np.uint8)
    # Template, rotated 15 degrees, scaled 2.2x and moved: a face somewhere in a photo.
    angle = np.deg2rad(15.0)
    rot = 2.2 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = ARCFACE_TEMPLATE @ rot.T + np.array([80.0, 60.0])
    # Mark the landmarks, align, and find the marks again.
    for x, y in landmarks:
        cv2.circle(image, (round(x), round(y)), 3, (255, 0, 0), -1)
    crop = align_face(image, landmarks)
    assert crop.shape == (112, 112, 3)
    assert crop.dtype == np.uint8
    for x, y in ARCFACE_TEMPLATE:
        assert crop[round(y), round(x), 0] > 200


def test_template_scales_with_the_crop_size() -> None:
    np.testing.assert_allclose(template_for((224, 224)), ARCFACE_TEMPLATE * 2)
    np.testing.assert_allclose(template_for((96, 112))[:, 0], ARCFACE_TEMPLATE[:, 0] - 8)
