"""Faces on their side or upside down, found again in the photo turned the right way up.

Photos reach the service turned by a quarter or half turn more often than one would hope:
messaging apps and some uploaders strip the EXIF orientation that `decode` applies, and
people lie down. Detectors learn from upright faces. On a turned one they still often find
it, but place its five points as if it were upright, and that crop matches nobody (a real
photo turned by 90 degrees: cosine 0.33 against its own enrolled face, 0.75 upright).

So a face whose landmarks put its roll at `TURN_AT` degrees or more is looked for again in
the image turned by the quarter turns that would upright it. Where the detector finds a
face there, at the same place and now upright, that face's box and landmarks, mapped back
to the photo, replace the first ones. Otherwise the face is kept, marked `misaligned`: its
points cannot be trusted, so quality calls it `low` and a search abstains on it. A photo
without such a face costs one `pose` per face; one with them costs one more detection per
distinct turn.

A small turned face is often worse off: the detector places its points as if it were upright
(a roll well under `TURN_AT`), so its roll cannot tell. Its aligned crop can: given a `scorer`
(RetinaFace's `face_scores`), each face's crop is scored as it is and in its three other quarter
turns, in one batch, and a crop that looks more like a face turned (`turned_crops`) sends the
face to be looked for again in the photo turned to match, and is `misaligned` likewise where
no upright face is found there. This costs one batch of four 160x160 RetinaFace views per face.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from service.vision.align import align_face
from service.vision.cascade import intersection, iou
from service.vision.detect import Detector, Face
from service.vision.quality import pose

# Alignment uprights anything the landmarks are right about, and up to about 45 degrees they
# are (bench.robustness: +-30 degrees costs nothing). A quarter turn reads about 75 to 90.
TURN_AT = 60.0
# The face found in the turned image must be upright there and overlap the first one this much.
SAME_FACE_IOU = 0.3
# The crop check: the face's 112x112 aligned crop (the embedder's), padded by 24 pixels (a
# detector needs some context); a turned view must score at least `TURNED_SCORE`, with odds of
# holding a face e**`TURNED_LOG_ODDS` (7.4) times the crop's as it is, to say that the face is
# turned. The odds, not the scores: a clear face scores near 1 every way up (a real group
# photo's upright face: 0.992 as it is, 0.993 upside down), while a clear face upside down still
# scores 0.86 where its upright view scores 0.99. On the robustness benchmark this takes 51 of
# the 100 turned faces found (their points placed as if upright) and none of the 2,000 faces of
# its ten other conditions, for about 8 ms of CPU a face. Padding by 16 saves 1 ms and lets
# more small upside-down faces by; shrinking the crop to 80 or 96 pixels lets 3 in 10 by.
# At most `CHECK_BATCH` faces' views go in one run, and only the largest `CHECK_MOST` faces are
# checked (the service's `max_faces_per_image` default; it passes its own setting).
CHECK_SIZE = 112
CHECK_PAD = 24
TURNED_SCORE = 0.5
TURNED_LOG_ODDS = 2.0
CHECK_BATCH = 16
CHECK_MOST = 32


class FaceScorer(Protocol):
    def face_scores(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        """(N,) how much each of N same-sized (H, W, 3) RGB images looks like it holds a face."""
        ...


def quarter_turns(roll: float) -> int:
    """How many counter-clockwise quarter turns (as np.rot90 counts them) upright a face whose
    roll is `roll` degrees (positive: turned clockwise in the image). 0, 1, 2 or 3."""
    return round(roll / 90.0) % 4


def turn_back(points: NDArray[np.floating], turns: int, turned_shape: tuple[int, ...]) -> NDArray[np.float32]:
    """(N, 2) x, y points of an image turned by `turns` (np.rot90) mapped to the image before
    the turn. Pixel centres sit at integer coordinates, as in OpenCV's warps."""
    out = np.asarray(points, np.float64).reshape(-1, 2).copy()
    height, width = turned_shape[:2]
    for _ in range(turns % 4):
        # One counter-clockwise quarter turn sends (x, y) of an image W wide to (y, W - 1 - x);
        # undone, from a turned image H' high: x = H' - 1 - y', y = x'.
        out = np.stack([height - 1 - out[:, 1], out[:, 0]], axis=1)
        height, width = width, height
    return out.astype(np.float32)


def _turned_back(face: Face, turns: int, turned_shape: tuple[int, ...]) -> Face:
    x1, y1, x2, y2 = face.box
    corners = turn_back(np.array([[x1, y1], [x2, y2]]), turns, turned_shape)
    box = np.concatenate([corners.min(axis=0), corners.max(axis=0)]).astype(np.float32)
    landmarks = turn_back(face.landmarks, turns, turned_shape)
    return Face(box, landmarks, face.score, turns=turns)


def turned_crops(scorer: FaceScorer, image: NDArray[np.uint8], faces: Sequence[Face]) -> list[int]:
    """For each face, the counter-clockwise quarter turns (np.rot90) after which its aligned crop
    looks most like a face, where that view scores `TURNED_SCORE` or more and beats the crop as
    it is by `TURNED_LOG_ODDS` in log-odds; else 0 (the crop is upright, or nothing looks like a face)."""
    out: list[int] = []
    for start in range(0, len(faces), CHECK_BATCH):
        views: list[NDArray[np.uint8]] = []
        for face in faces[start : start + CHECK_BATCH]:
            crop = align_face(image, face.landmarks, (CHECK_SIZE, CHECK_SIZE))
            padded = cv2.copyMakeBorder(crop, *(CHECK_PAD,) * 4, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            views.extend(np.rot90(padded, k) for k in range(4))
        scores = scorer.face_scores(np.ascontiguousarray(np.stack(views))).reshape(-1, 4)
        odds = np.log(np.clip(scores, 1e-6, 1 - 1e-6)) - np.log1p(-np.clip(scores, 1e-6, 1 - 1e-6))
        for row, log_odds in zip(scores, odds, strict=True):
            best = int(np.argmax(row))
            turned = row[best] >= TURNED_SCORE and log_odds[best] - log_odds[0] >= TURNED_LOG_ODDS
            out.append(best if best and turned else 0)
    return out


class UprightDetector:
    """`inner`, with its turned faces found again upright (`upright_faces`); with a `scorer`, the
    faces whose crops look turned too, among the largest `check_most` (the ones the service
    answers for: `FACEID_MAX_FACES_PER_IMAGE`)."""

    def __init__(self, inner: Detector, scorer: FaceScorer | None = None, check_most: int = CHECK_MOST) -> None:
        self.inner = inner
        self.scorer = scorer
        self.check_most = check_most
        self.name = inner.name

    def detect(self, image: NDArray[np.uint8]) -> list[Face]:
        return upright_faces(self.inner, image, self.inner.detect(image), self.scorer, self.check_most)


def upright_faces(
    detector: Detector,
    image: NDArray[np.uint8],
    faces: list[Face],
    scorer: FaceScorer | None = None,
    check_most: int = CHECK_MOST,
) -> list[Face]:
    """`faces` (found by `detector` in `image`), each turned face replaced by the one the detector
    finds where the image is turned upright for it; largest first, as detectors return them. With
    a `scorer`, a face among the largest `check_most` whose roll looks upright but whose crop looks
    turned (`turned_crops`) is looked for likewise, and is marked `misaligned` where it is not
    found upright. The check costs a RetinaFace pass per face: the bound keeps a crowd photo of
    hundreds of faces from costing hundreds of passes for faces no answer reports."""
    rolls = [pose(face.landmarks)[2] for face in faces]
    needed = [quarter_turns(roll) if abs(roll) >= TURN_AT else 0 for roll in rolls]
    by_crop = [False] * len(faces)
    if scorer is not None:
        by_size = sorted(range(len(faces)), key=lambda i: faces[i].area, reverse=True)[: max(check_most, 0)]
        looked = [i for i in sorted(by_size) if abs(rolls[i]) < TURN_AT]
        for i, crop_turns in zip(looked, turned_crops(scorer, image, [faces[i] for i in looked]), strict=True):
            if crop_turns:
                # the crop is the photo turned by `roll` already: the two add up
                needed[i], by_crop[i] = quarter_turns(rolls[i] + 90.0 * crop_turns), True
    found: dict[int, list[Face]] = {}
    out: list[Face] = []
    changed = False
    for face, turns, crop_said in zip(faces, needed, by_crop, strict=True):
        if turns == 0:
            out.append(replace(face, misaligned=True) if crop_said else face)
            changed |= crop_said
            continue
        if turns not in found:
            turned = np.ascontiguousarray(np.rot90(image, turns))
            upright = [f for f in detector.detect(turned) if abs(pose(f.landmarks)[2]) < TURN_AT]
            found[turns] = [_turned_back(f, turns, turned.shape) for f in upright]
        same = [f for f in found[turns] if iou(f.box, face.box) >= SAME_FACE_IOU]
        if same:
            out.append(max(same, key=lambda f: iou(f.box, face.box)))
            changed = True
        else:
            # looked for upright, and not found there: its points cannot be trusted
            out.append(replace(face, misaligned=True))
            changed = True
    if not changed:
        return faces
    # One upright face may answer for two first ones: once. And a turned face often draws a
    # second, weaker box around it as well (a real photo: 0.52 around the face's 0.996): a face
    # that holds most of an upright one and scores lower is that face again.
    unique = list({id(f): f for f in out}.values())
    uprighted = [f for f in unique if f.turns]
    kept = [f for f in unique if f.turns or not any(_holds(f, u) and f.score < u.score for u in uprighted)]
    return sorted(kept, key=lambda f: f.area, reverse=True)


def _holds(outer: Face, inner: Face, share: float = 0.8) -> bool:
    """Whether `outer`'s box covers at least `share` of `inner`'s."""
    return inner.area > 0 and intersection(outer.box, inner.box) >= share * inner.area
