"""Occlusion of the eyes and the mouth, from the face as the embedder sees it.

No shipped model can tell occlusion, so this is a measured rule on the 112x112
ArcFace-aligned crop, where the eyes and the mouth always sit at the same place. A
region counts as covered when it has lost what a real eye or mouth has:

- eyes (sunglasses, an eye patch): the more covered eye is dark nearly all over against
  the face's own cheeks, and so is the skin just under it. An open eye has a dark iris,
  but its sclera, lids and the skin around it stay bright, so the region's upper
  quartile of grey levels stays near the cheeks'; an eye socket in shadow under heavy
  brows is dark, but the skin under it is not; a lens's frame, its glare or a reflection
  cover too little of the region to matter;
- mouth (a mask, a scarf, a hand): the mouth region is flat, both in its spread of grey
  levels and in its edge energy. Its brightness is not used: masks come in every
  colour.

Every measure is relative to the same face (the cheeks, the inner face), so it holds
in a dark room as in daylight, and on grey photos as on colour ones. Each measure is
turned into 0 (like an open face) .. 1 (like a covered one) by a linear ramp whose
ends are calibrated on the degradation suite (`bench.robustness`, see `EYE_RAMPS` and
`MOUTH_RAMPS`). The eyes' score is the least of their ramps, so they count as covered
(score >= `COVERED`) only when both signs agree; the mouth's is the mean of its two. Clear glasses, closed eyes,
eye sockets in shadow and beards keep their texture and are not covered.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from service.vision.align import ARCFACE_SIZE, ARCFACE_TEMPLATE

# Regions on the 112x112 template: (centre x, centre y, width, height).
_EYES = [(float(x), float(y), 22, 14) for x, y in ARCFACE_TEMPLATE[:2]]
_UNDER_EYES = [(x, y + 8.0, 18, 6) for x, y, _, _ in _EYES]
_CHEEKS = [(36.0, 72.0, 12, 10), (76.0, 72.0, 12, 10)]
_MOUTH = (float(ARCFACE_TEMPLATE[3:, 0].mean()), float(ARCFACE_TEMPLATE[3:, 1].mean()) + 1.0, 34, 14)
_INNER = (slice(28, 104), slice(22, 90))

# (value like an open face, value like a covered one). On the suite (cascade detector, 208
# faces per condition; 10th / 50th / 90th percentiles):
#   the eye's upper-quartile grey level over the cheeks' mean: open 0.65 / 0.75-0.80 / 0.93
#     in every other condition (5th percentile 0.61), sunglasses 0.10 / 0.19 / 0.26;
#   the median grey level under the eye over the cheeks': open 0.66-0.74 / 0.81-0.88 / 0.92-1.05
#     (5th percentile 0.61), sunglasses 0.10 / 0.19 / 0.26;
#   mouth grey-level spread over the inner face's: open 0.34 / 0.6-0.77 / 1.0 (blur lowest),
#     mask 0.00 / 0.00 / 0.19;
#   mouth edge energy over the inner face's: open 0.80 / 1.3-1.6 / 2.2 (blur lowest),
#     mask 0.00 / 0.00 / 0.48.
# Each ramp runs from about the open faces' 10th percentile to the covered faces' 90th.
EYE_RAMPS = {"brightness": (0.58, 0.38), "under": (0.58, 0.38)}
MOUTH_RAMPS = {"spread": (0.32, 0.19), "edges": (0.80, 0.50)}
COVERED = 0.5


@dataclass(frozen=True)
class Occlusion:
    eyes: float  # 0: open .. 1: covered
    mouth: float

    @property
    def covered(self) -> tuple[str, ...]:
        return tuple(
            name for name, score in (("eyes_covered", self.eyes), ("mouth_covered", self.mouth)) if score >= COVERED
        )


def _region(image: NDArray[np.float32], box: tuple[float, float, int, int]) -> NDArray[np.float32]:
    cx, cy, w, h = box
    y0, x0 = max(0, round(cy - h / 2)), max(0, round(cx - w / 2))
    return image[y0 : y0 + h, x0 : x0 + w]


def _ramp(value: float, ends: tuple[float, float]) -> float:
    """0 at the open end, 1 at the covered end (either way round), linear between."""
    open_, covered = ends
    return float(np.clip((open_ - value) / (open_ - covered), 0.0, 1.0))


def measures(crop: NDArray[np.uint8]) -> dict[str, float]:
    """The relative measures behind `occlusion`, of an ArcFace-aligned crop (RGB or grey, any
    square size: measured at 112x112)."""
    if crop.shape[:2] != (ARCFACE_SIZE, ARCFACE_SIZE):
        crop = np.asarray(cv2.resize(crop, (ARCFACE_SIZE, ARCFACE_SIZE), interpolation=cv2.INTER_AREA), np.uint8)
    grey = (crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)).astype(np.float32)
    edges = np.abs(cv2.Laplacian(cv2.GaussianBlur(grey, (3, 3), 0), cv2.CV_32F, ksize=3))
    inner_spread = float(grey[_INNER].std()) + 1.0
    inner_edges = float(edges[_INNER].mean()) + 1e-3
    cheeks = float(np.mean([_region(grey, c).mean() for c in _CHEEKS])) + 1.0
    eyes = [_region(grey, e) for e in _EYES]
    return {
        "eye_brightness": min(float(np.percentile(e, 75)) for e in eyes) / cheeks,
        "under_eye_brightness": min(float(np.median(_region(grey, u))) for u in _UNDER_EYES) / cheeks,
        "mouth_spread": float(_region(grey, _MOUTH).std()) / inner_spread,
        "mouth_edges": float(_region(edges, _MOUTH).mean()) / inner_edges,
    }


def occlusion(crop: NDArray[np.uint8]) -> Occlusion:
    m = measures(crop)
    eyes = min(
        _ramp(m["eye_brightness"], EYE_RAMPS["brightness"]), _ramp(m["under_eye_brightness"], EYE_RAMPS["under"])
    )
    # a cloth's weave and pleats leave a mask some edge energy, but little spread of grey levels
    mouth = (_ramp(m["mouth_spread"], MOUTH_RAMPS["spread"]) + _ramp(m["mouth_edges"], MOUTH_RAMPS["edges"])) / 2
    return Occlusion(eyes=eyes, mouth=mouth)
