"""Faces on their side or upside down, found again in the photo turned the right way up.

Photos reach the service turned by a quarter or half turn more often than one would hope:
messaging apps and some uploaders strip the EXIF orientation that `decode` applies, and
people lie down. Detectors learn from upright faces. On a turned one they still often find
it, but place its five points as if it were upright, and that crop matches nobody (a real
photo turned by 90 degrees: cosine 0.33 against its own enrolled face, 0.75 upright).

So a face whose landmarks put its roll at `TURN_AT` degrees or more is looked for again in
the image turned by the quarter turns that would upright it. Where the detector finds a
face there, at the same place and now upright, that face's box and landmarks, mapped back
to the photo, replace the first ones. Otherwise the face stays as it was (and quality calls
it `rotated`). A photo without such a face costs one `pose` per face; one with them costs one
more detection per distinct turn.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from service.vision.cascade import intersection, iou
from service.vision.detect import Detector, Face
from service.vision.quality import pose

# Alignment uprights anything the landmarks are right about, and up to about 45 degrees they
# are (bench.robustness: +-30 degrees costs nothing). A quarter turn reads about 75 to 90.
TURN_AT = 60.0
# The face found in the turned image must be upright there and overlap the first one this much.
SAME_FACE_IOU = 0.3


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


class UprightDetector:
    """`inner`, with its turned faces found again upright (`upright_faces`)."""

    def __init__(self, inner: Detector) -> None:
        self.inner = inner
        self.name = inner.name

    def detect(self, image: NDArray[np.uint8]) -> list[Face]:
        return upright_faces(self.inner, image, self.inner.detect(image))


def upright_faces(detector: Detector, image: NDArray[np.uint8], faces: list[Face]) -> list[Face]:
    """`faces` (found by `detector` in `image`), each turned face replaced by the one the detector
    finds where the image is turned upright for it; largest first, as detectors return them."""
    found: dict[int, list[Face]] = {}
    out: list[Face] = []
    changed = False
    for face in faces:
        roll = pose(face.landmarks)[2]
        turns = quarter_turns(roll)
        if abs(roll) < TURN_AT or turns == 0:
            out.append(face)
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
            out.append(face)
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
