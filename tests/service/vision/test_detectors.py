import pytest
from pydantic import ValidationError

from service.settings import Settings
from service.vision.cascade import CascadeDetector
from service.vision.detect import YuNetDetector
from service.vision.detectors import build_detector
from service.vision.retinaface import RetinaFaceDetector
from service.vision.upright import UprightDetector


def test_the_default_is_the_cascade_with_each_detectors_own_score(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FACEID_DETECTOR", raising=False)
    monkeypatch.delenv("FACEID_DETECT_SCORE_THRESHOLD", raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.detector == "cascade" and settings.detect_score_threshold is None
    upright = build_detector(settings.detector, score_threshold=settings.detect_score_threshold)
    assert isinstance(upright, UprightDetector)  # turned faces found again upright, whatever the kind
    built = upright.inner
    assert isinstance(built, CascadeDetector)
    assert isinstance(built.first, RetinaFaceDetector) and isinstance(built.second, YuNetDetector)
    assert (built.sure, built.unsure) == (0.5, 0.3)
    assert built.second.options.score_threshold == 0.6


def test_the_setting_selects_and_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEID_DETECTOR", "yunet")
    monkeypatch.setenv("FACEID_DETECT_SCORE_THRESHOLD", "0.7")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    built = build_detector(settings.detector, score_threshold=settings.detect_score_threshold)
    assert isinstance(built, UprightDetector) and isinstance(built.inner, YuNetDetector)
    assert built.inner.options.score_threshold == 0.7
    monkeypatch.setenv("FACEID_DETECTOR", "mtcnn")
    with pytest.raises(ValidationError):
        Settings(_env_file=None)  # type: ignore[call-arg]
