"""The detector the service runs (`FACEID_DETECTOR`), built from the packaged, sha256-checked weights.

- `retinaface`: RetinaFace-MobileNet0.25 (MIT), score 0.5;
- `cascade`: RetinaFace down to 0.3; a face between 0.3 and 0.5 is kept only where
  YuNet also finds one, and where RetinaFace finds nothing YuNet's faces are taken;
- `yunet`: YuNet 2023mar (MIT), score 0.6, the detector before issue 11.

`bench.robustness` measured them against each other (README, Benchmarks). Each comes
wrapped in `UprightDetector`: a face lying on its side or upside down is found again in the
photo turned upright for it, and so is a face whose aligned crop looks turned
(`service.vision.upright`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

from service.vision.cascade import CascadeDetector
from service.vision.detect import Detector, DetectorOptions, YuNetDetector
from service.vision.models import load_detector_model, load_retinaface_model
from service.vision.retinaface import RetinaFaceDetector
from service.vision.upright import CHECK_MOST, UprightDetector

DetectorKind = Literal["retinaface", "cascade", "yunet"]
DETECTOR_KINDS: tuple[DetectorKind, ...] = ("retinaface", "cascade", "yunet")
DEFAULT_SCORE = {"retinaface": 0.5, "cascade": 0.5, "yunet": 0.6}
CASCADE_UNSURE = 0.3


def build_detector(
    kind: DetectorKind,
    *,
    score_threshold: float | None = None,
    max_side: int = 640,
    min_face: int = 12,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    check_most: int = CHECK_MOST,
) -> Detector:
    """`score_threshold` None: the detector's own default (`DEFAULT_SCORE`). `check_most`: how many
    of the largest faces get the upright pass's crop check (the service: its `max_faces_per_image`)."""
    # RetinaFace also says whether each face's aligned crop looks turned (the upright pass's check)
    scorer = RetinaFaceDetector(load_retinaface_model(), providers=providers, name="retinaface_orientation")
    return UprightDetector(_detector(kind, score_threshold, max_side, min_face, providers), scorer, check_most)


def _detector(
    kind: DetectorKind, score_threshold: float | None, max_side: int, min_face: int, providers: Sequence[str]
) -> Detector:
    score = DEFAULT_SCORE[kind] if score_threshold is None else score_threshold
    options = DetectorOptions(score_threshold=score, max_side=max_side, min_face=min_face)
    if kind == "yunet":
        return YuNetDetector(load_detector_model(), options)
    retina = replace(options, nms_threshold=0.4)
    if kind == "retinaface":
        return RetinaFaceDetector(load_retinaface_model(), retina, providers=providers)
    if kind == "cascade":
        unsure = min(CASCADE_UNSURE, score)
        first = RetinaFaceDetector(
            load_retinaface_model(), replace(retina, score_threshold=unsure), providers=providers
        )
        second = YuNetDetector(load_detector_model(), replace(options, score_threshold=DEFAULT_SCORE["yunet"]))
        return CascadeDetector(first, second, sure=score, unsure=unsure, name="retinaface+yunet")
    raise ValueError(f"unknown detector {kind!r}; choose one of {DETECTOR_KINDS}")
