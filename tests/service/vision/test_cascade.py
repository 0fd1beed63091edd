import numpy as np
import pytest

from bench import robustness
from service.vision.cascade import CascadeDetector, iou
from service.vision.decode import decode_image
from service.vision.detectors import DETECTOR_KINDS, build_detector
from service.vision.upright import UprightDetector
from tests.conftest import photo


@pytest.fixture(scope="module")
def cascade() -> CascadeDetector:
    built = build_detector("cascade")
    assert isinstance(built, UprightDetector) and isinstance(built.inner, CascadeDetector)
    return built.inner


def masked_orl() -> robustness.Probe:
    """ORL s2/2 behind a drawn mask: RetinaFace scores it 0.42, under its 0.5 bar; YuNet finds it."""
    subject = robustness.orl_subject(2, 2, [build_detector("retinaface")])
    return robustness.degrade(subject, "mask", "t")


def test_an_unsure_face_is_kept_when_the_second_detector_agrees(cascade: CascadeDetector) -> None:
    probe = masked_orl()
    assert robustness.find(build_detector("retinaface"), probe) is None
    found = robustness.find(cascade, probe)
    assert found is not None and 0.3 <= found.score < 0.5


def test_an_unsure_face_is_dropped_when_the_second_detector_disagrees(cascade: CascadeDetector) -> None:
    probe = masked_orl()
    blind = CascadeDetector(cascade.first, build_detector("yunet", min_face=10_000), sure=0.5, unsure=0.3)
    assert robustness.find(blind, probe) is None


def test_group_photos_keep_every_face_and_only_faces(cascade: CascadeDetector) -> None:
    names = ("t1.jpg", "sample1.jpg", "sample2.jpg", "sample3.jpg")
    counts = {n: len(cascade.detect(decode_image(photo(n)))) for n in names}
    assert counts == {"t1.jpg": 6, "sample1.jpg": 3, "sample2.jpg": 3, "sample3.jpg": 3}


def test_no_face_in_textures(cascade: CascadeDetector) -> None:
    rng = np.random.default_rng(1)
    assert all(cascade.detect(robustness.texture(rng)) == [] for _ in range(10))


def test_every_kind_builds_and_finds_obama() -> None:
    image = decode_image(photo("obama.jpg"))
    for kind in DETECTOR_KINDS:
        detector = build_detector(kind)
        assert detector.name
        assert len(detector.detect(image)) == 1, kind
    with pytest.raises(ValueError, match="unsure"):
        CascadeDetector(detector, detector, sure=0.3, unsure=0.5)


def test_iou() -> None:
    a = np.array([0, 0, 10, 10], np.float32)
    assert iou(a, a) == 1.0
    assert iou(a, np.array([5, 0, 15, 10], np.float32)) == pytest.approx(50 / 150)
    assert iou(a, np.array([20, 20, 30, 30], np.float32)) == 0.0


def test_when_the_first_finds_nothing_the_second_is_taken(cascade: CascadeDetector) -> None:
    # ORL s1/9 behind the suite's mask (seed key 0): RetinaFace finds nothing down to 0.3, YuNet finds it.
    subject = robustness.orl_subject(1, 9, [build_detector("retinaface")])
    probe = robustness.degrade(subject, "mask", 0)
    assert cascade.first.detect(probe.image) == []
    assert robustness.find(cascade, probe) is not None
    strict = CascadeDetector(cascade.first, cascade.second, sure=0.5, unsure=0.3, fallback=False)
    assert robustness.find(strict, probe) is None
