"""Face quality: pure functions of a detected face and its pixels.

Measured on the face as the embedder sees it (the 112x112 ArcFace-aligned crop), so
a face is judged the same whatever the photo's size:

- sharpness: variance of the Laplacian over the inner face, in grey levels squared;
- brightness: mean grey level of the inner face, 0..1; contrast: its RMS, 0..1;
- face_size: the inter-ocular distance in the photo, in pixels;
- yaw, pitch, roll in degrees, from where the five landmarks fall against the
  ArcFace template (roll: the rotation that uprights them; yaw: the nose left or right of the eyes'
  centre line; pitch: the nose up or down between the eye line and the mouth line);
- occlusion of the eyes and of the mouth, 0..1 (`service.vision.occlusion`): covered eyes
  make a face `low` (`eyes_covered`), a covered mouth keeps it from `high` (`mouth_covered`);
- `misaligned`: a face whose crop looks turned but that was not found upright
  (`service.vision.upright`) is `low`, and a search abstains on it (`FaceQuality.abstains`);
- for_recognition: `high`, `medium` or `low`, from those measures with cut-offs
  calibrated on the degradation suite (`bench.robustness`, see `LEVELS`).

`assess(face, crop)` is the entry point for a face the pipeline has aligned already,
`assess_image(image, face)` for one that is not; the rest are their parts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from service.vision.align import ARCFACE_SIZE, ARCFACE_TEMPLATE, align_face, similarity_transform
from service.vision.detect import Face
from service.vision.occlusion import Occlusion, occlusion

Level = Literal["high", "medium", "low"]

# The inner face of the 112x112 crop: brows to chin, cheek to cheek (hair and background out).
INNER = (slice(28, 104), slice(22, 90))
# On the template the nose tip sits 0.49 of the way from the eye line to the mouth line, and
# in the middle of the eyes; a real nose tip stands about 0.55 inter-ocular distances proud of
# the eye-mouth plane, which turns its offset into an angle.
NOSE_DEPTH = 0.55
_EYES_MID = ARCFACE_TEMPLATE[:2].mean(axis=0)
_MOUTH_MID = ARCFACE_TEMPLATE[3:].mean(axis=0)
_IOD = float(np.linalg.norm(ARCFACE_TEMPLATE[1] - ARCFACE_TEMPLATE[0]))
_NOSE_DOWN = float((ARCFACE_TEMPLATE[2, 1] - _EYES_MID[1]) / (_MOUTH_MID[1] - _EYES_MID[1]))


@dataclass(frozen=True)
class Cutoffs:
    """A face is `low` below any `low` bar, `high` above every `high` bar, else `medium`."""

    min_face_size: float  # inter-ocular pixels
    min_sharpness: float
    min_brightness: float
    max_brightness: float
    min_contrast: float
    max_yaw: float  # degrees
    max_pitch: float
    max_roll: float


# Calibrated on bench.robustness (cascade detector + SFace, 2,080 degraded searches): every clean
# photo is at least `medium` (clean minima: sharpness 87, brightness 0.29, contrast 0.08), and
# `low` holds the faces the embedder cannot be trusted with. With covered eyes counted `low` too
# (service.vision.occlusion): DIR 0.75 there against 0.95-0.96 for `medium` and `high`, and
# strangers pass the default threshold at 1.14% against 0.22% (`medium`) and 0% (`high`).
LEVELS: dict[str, Cutoffs] = {
    "low": Cutoffs(
        min_face_size=10.0,
        min_sharpness=15.0,
        min_brightness=0.10,
        max_brightness=0.92,
        min_contrast=0.03,
        max_yaw=45.0,
        max_pitch=40.0,
        max_roll=60.0,
    ),
    "high": Cutoffs(
        min_face_size=24.0,
        min_sharpness=80.0,
        min_brightness=0.25,
        max_brightness=0.85,
        min_contrast=0.08,
        max_yaw=25.0,
        max_pitch=25.0,
        max_roll=60.0,
    ),
}

# What the decision should add to its threshold for a face of each level (bench.robustness):
# +0.02 on `low` holds FPIR under 1% in every condition of the suite (worst 1.71% -> 0.85%)
# for 1.0 point of pooled DIR (0.902 -> 0.892; 5.5 of them on sunglasses, whose faces are
# nearly all `low`); abstaining on `low` instead costs 17 points (0.737).
THRESHOLD_MARGIN: dict[str, float] = {"high": 0.0, "medium": 0.0, "low": 0.02}


@dataclass(frozen=True)
class FaceQuality:
    sharpness: float
    brightness: float
    contrast: float
    face_size: float
    yaw: float
    pitch: float
    roll: float
    occlusion: Occlusion
    for_recognition: Level
    reasons: tuple[str, ...]  # the bars a `low` or `medium` face missed

    @property
    def abstains(self) -> bool:
        """Whether no similarity of this face can be trusted, at any threshold: its crop is not
        the face the embedder expects (`ABSTAIN_ON`)."""
        return any(r in ABSTAIN_ON for r in self.reasons)

    def public(self) -> dict[str, Any]:
        out = asdict(self)
        out["reasons"] = list(self.reasons)
        out["occlusion"] = {k: round(v, 3) for k, v in out["occlusion"].items()}
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def pose(landmarks: NDArray[np.floating]) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from 5 landmarks (image-left eye first).

    Roll is the angle of the face's upright axis (all five points; positive: turned
    clockwise in the image). Yaw is positive
    when the nose points to the image's right, pitch when it points down.
    """
    points = np.asarray(landmarks, np.float64).reshape(5, 2)
    matrix = similarity_transform(points, ARCFACE_TEMPLATE)
    roll = -float(np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0])))  # undoing it makes the face upright
    on_template = points @ matrix[:, :2].T + matrix[:, 2]
    eyes = on_template[:2].mean(axis=0)
    mouth = on_template[3:].mean(axis=0)
    nose = on_template[2]
    iod = max(float(np.linalg.norm(on_template[1] - on_template[0])), 1e-6)
    midline_x = (eyes[0] + mouth[0]) / 2
    yaw = float(np.degrees(np.arctan2((nose[0] - midline_x) / iod, NOSE_DEPTH)))
    height = max(float(mouth[1] - eyes[1]), 1e-6)
    down = (nose[1] - eyes[1]) / height - _NOSE_DOWN
    pitch = float(np.degrees(np.arctan2(down * height / iod, NOSE_DEPTH)))
    return yaw, pitch, roll


def residual_roll(roll: float, turns: int) -> float:
    """What is left of `roll` once the image is turned by `turns` counter-clockwise quarter
    turns (service.vision.upright), in [-180, 180)."""
    return (roll - 90.0 * turns + 180.0) % 360.0 - 180.0


def face_size(landmarks: NDArray[np.floating]) -> float:
    """Inter-ocular distance in pixels."""
    points = np.asarray(landmarks, np.float64).reshape(5, 2)
    return float(np.linalg.norm(points[1] - points[0]))


def photometry(crop: NDArray[np.uint8]) -> tuple[float, float, float]:
    """(sharpness, brightness, contrast) of a face aligned to the ArcFace template (any square
    size: it is measured at 112x112), over the inner face."""
    if crop.shape[:2] != (ARCFACE_SIZE, ARCFACE_SIZE):
        crop = np.asarray(cv2.resize(crop, (ARCFACE_SIZE, ARCFACE_SIZE), interpolation=cv2.INTER_AREA), np.uint8)
    grey = crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    inner = grey[INNER].astype(np.float32)
    sharpness = float(cv2.Laplacian(inner, cv2.CV_32F, ksize=1).var())
    return sharpness, float(inner.mean() / 255.0), float(inner.std() / 255.0)


# Occlusion's place in the level. Covered eyes take most of what tells people apart: on the
# suite, sunglasses are the condition with the lowest rank-1 after blur. A mask leaves the eyes
# and brows: SFace still finds 100% of the masked faces at rank 1, so it only keeps a face from `high`.
OCCLUDED_LOW = frozenset({"eyes_covered"})
# Reasons on which a search answers `unknown` whatever the similarity: the five points are
# wrong, so the crop holds part of a face or a face on its side (bench.robustness, quarter turns).
ABSTAIN_ON = frozenset({"misaligned"})


def level(
    quality: dict[str, float],
    levels: dict[str, Cutoffs] = LEVELS,
    covered: tuple[str, ...] = (),
    misaligned: bool = False,
) -> tuple[Level, tuple[str, ...]]:
    """The `for_recognition` level of measured values (and of the regions found covered, see
    `service.vision.occlusion`; and of a face `misaligned`, see `service.vision.upright`), and
    the bars it missed."""

    def missed(c: Cutoffs) -> list[str]:
        out = []
        if quality["face_size"] < c.min_face_size:
            out.append("small_face")
        if quality["sharpness"] < c.min_sharpness:
            out.append("blurry")
        if quality["brightness"] < c.min_brightness:
            out.append("dark")
        if quality["brightness"] > c.max_brightness:
            out.append("overexposed")
        if quality["contrast"] < c.min_contrast:
            out.append("low_contrast")
        if abs(quality["yaw"]) > c.max_yaw:
            out.append("turned")
        if abs(quality["pitch"]) > c.max_pitch:
            out.append("tilted")
        if abs(quality["roll"]) > c.max_roll:
            out.append("rotated")
        return out

    low = (["misaligned"] if misaligned else []) + missed(levels["low"]) + [c for c in covered if c in OCCLUDED_LOW]
    if low:
        return "low", tuple(low)
    high = missed(levels["high"]) + list(covered)
    return ("medium", tuple(high)) if high else ("high", ())


def assess(face: Face, crop: NDArray[np.uint8]) -> FaceQuality:
    """The quality of `face` (landmarks in the photo's full-resolution pixels) from its aligned
    `crop`, the one the embedder gets (`FacePipeline.crops`): no extra warp per face."""
    sharpness, brightness, contrast = photometry(crop)
    yaw, pitch, roll = pose(face.landmarks)
    measured = {
        "sharpness": sharpness,
        "brightness": brightness,
        "contrast": contrast,
        "face_size": face_size(face.landmarks),
        "yaw": yaw,
        "pitch": pitch,
        "roll": roll,
    }
    covered = occlusion(crop)
    # A face found upright in the photo turned by quarter turns is judged on the roll left after
    # them: its landmarks were found upright, and the crop is as good as an upright face's.
    judged = measured | {"roll": residual_roll(roll, face.turns)}
    verdict, reasons = level(judged, covered=covered.covered, misaligned=face.misaligned)
    return FaceQuality(**measured, occlusion=covered, for_recognition=verdict, reasons=reasons)


def assess_image(image: NDArray[np.uint8], face: Face) -> FaceQuality:
    """`assess` for a face in an (H, W, 3) RGB image at the landmarks' scale: aligns it first."""
    return assess(face, align_face(image, face.landmarks))
