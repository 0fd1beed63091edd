"""A second detector's opinion, asked only where the first is unsure.

The first detector runs with a low score bar. Faces at or above `sure` are kept as
they are; a face between `unsure` and `sure` (a masked or dark face, typically) is
kept only when the second detector also finds a face there (IoU at least
`agree_iou`). When the first finds nothing at all down to `unsure`, the second
detector's faces are taken (`fallback`: a mask can hide a face from RetinaFace
entirely where YuNet still finds it). The second detector runs only on images with
an unsure face or none, so a photo of clear faces costs what the first costs.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from service.vision.detect import Detector, Face


def intersection(a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
    """The area two x1, y1, x2, y2 boxes share."""
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    return max(0.0, float(x2 - x1)) * max(0.0, float(y2 - y1))


def iou(a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
    inter = intersection(a, b)
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union if union > 0 else 0.0


class CascadeDetector:
    def __init__(
        self,
        first: Detector,
        second: Detector,
        *,
        sure: float,
        unsure: float,
        agree_iou: float = 0.4,
        fallback: bool = True,
        name: str | None = None,
    ) -> None:
        if not unsure <= sure:
            raise ValueError(f"unsure ({unsure}) must not exceed sure ({sure})")
        self.first = first
        self.second = second
        self.sure = sure
        self.unsure = unsure
        self.agree_iou = agree_iou
        self.fallback = fallback
        self.name = name or f"{first.name}+{second.name}"

    def detect(self, image: NDArray[np.uint8]) -> list[Face]:
        """Faces in an (H, W, 3) RGB image, largest first. `first` must report faces down to `unsure`."""
        found = [f for f in self.first.detect(image) if f.score >= self.unsure]
        kept = [f for f in found if f.score >= self.sure]
        doubtful = [f for f in found if f.score < self.sure]
        if doubtful:
            others = self.second.detect(image)
            kept += [f for f in doubtful if any(iou(f.box, o.box) >= self.agree_iou for o in others)]
        elif not found and self.fallback:
            kept = self.second.detect(image)
        kept.sort(key=lambda f: f.area, reverse=True)
        return kept
