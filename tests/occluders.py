"""Occluders drawn on real photos for the occlusion tests: rectangular lenses with a frame, a
glare streak and grain; a pleated cloth mask with folds and weave. They are drawn unlike
bench.robustness's flat ellipses and polygons (which calibrated `service.vision.occlusion`),
so that a rule tuned on flat fills alone would fail them."""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from service.vision.detect import Face


def sunglasses(image: NDArray[np.uint8], face: Face, seed: int = 0) -> NDArray[np.uint8]:
    rng = np.random.default_rng(seed)
    out = image.astype(np.float32)
    (lx, ly), (rx, ry) = face.landmarks[0], face.landmarks[1]
    iod = float(np.hypot(rx - lx, ry - ly))
    w, h = 0.46 * iod, 0.30 * iod
    lenses = np.zeros(image.shape[:2], np.uint8)
    for x, y in ((lx, ly), (rx, ry)):
        cv2.rectangle(lenses, (round(x - w), round(y - h)), (round(x + w), round(y + h)), 255, -1)
    tint = 25 + rng.normal(0, 6, image.shape)  # dark, grainy glass
    out = np.where(lenses[:, :, None] > 0, tint, out)
    for x, y in ((lx, ly), (rx, ry)):  # a frame and a glare streak on each lens
        cv2.rectangle(out, (round(x - w), round(y - h)), (round(x + w), round(y + h)), (10, 10, 10), 2)
        cv2.line(
            out, (round(x - w * 0.6), round(y + h * 0.5)), (round(x - w * 0.1), round(y - h * 0.6)), (95, 95, 95), 2
        )
    cv2.line(out, (round(lx + w), round(ly)), (round(rx - w), round(ry)), (10, 10, 10), 3)  # the bridge
    return np.clip(out, 0, 255).astype(np.uint8)


def cloth_mask(image: NDArray[np.uint8], face: Face, seed: int = 0) -> NDArray[np.uint8]:
    rng = np.random.default_rng(seed)
    out = image.astype(np.float32)
    eyes, nose, mouth = face.landmarks[:2], face.landmarks[2], face.landmarks[3:]
    iod = float(np.linalg.norm(eyes[1] - eyes[0]))
    top, bottom = nose[1] - 0.15 * iod, mouth[:, 1].mean() + 0.9 * iod
    cx = float(nose[0])
    polygon = np.array(
        [
            [cx - 1.05 * iod, top + 0.1 * iod],
            [cx + 1.05 * iod, top + 0.1 * iod],
            [cx + 0.8 * iod, bottom],
            [cx - 0.8 * iod, bottom],
        ]
    )
    area = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(area, [np.round(polygon).astype(np.int32)], 255)
    cloth = np.array([150.0, 190.0, 225.0]) + rng.normal(0, 4, image.shape)  # pale blue weave
    for k in range(1, 4):  # three pleats
        y = round(top + (bottom - top) * k / 4)
        cv2.line(cloth, (round(cx - iod), y), (round(cx + iod), y), (120, 160, 200), max(1, round(iod * 0.02)))
    out = np.where(area[:, :, None] > 0, cloth, out)
    return np.clip(out, 0, 255).astype(np.uint8)
