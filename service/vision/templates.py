"""Enrollment templates: what the gallery stores for an enrolled face.

A probe photo is often worse than the enrollment photo: blurred, tiny, over-compressed, or
with the eyes behind sunglasses. An embedder that was never taught those conditions moves
such a probe away from the person's clean embedding, and with one clean photo enrolled a
synthetic stranger in the gallery can then sit closer. Storing, for each enrolled face, the
mean of the embeddings of its aligned crop and of a few degraded views of that crop puts the
template between the person's clean and degraded looks (template augmentation, as in
IJB-style template pooling). One vector per face is stored, so search, the gallery and the
store are unchanged; enrollment embeds 1 + len(VIEWS) crops per face instead of one.

Measured by bench.robustness (README, hard faces). The views are fixed here and were chosen
on that suite, so its figures flatter them; `tests/service/vision/test_templates.py` checks
them on occluders and blurs drawn unlike the suite's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np
from numpy.typing import NDArray

from service.vision.align import ARCFACE_SIZE, ARCFACE_TEMPLATE
from service.vision.embed import Embedder, l2_normalize

Crop = NDArray[np.uint8]  # (H, W, 3) RGB, aligned to the ArcFace template at H x W


def _blur(sigma: float) -> Callable[[Crop], Crop]:
    def view(crop: Crop) -> Crop:
        scale = crop.shape[1] / ARCFACE_SIZE
        return np.asarray(cv2.GaussianBlur(crop, (0, 0), sigma * scale), np.uint8)

    return view


def _low_resolution(side: int) -> Callable[[Crop], Crop]:
    """The face seen `side` pixels across its crop (about 0.55 * side between the ears), scaled back."""

    def view(crop: Crop) -> Crop:
        h, w = crop.shape[:2]
        small = cv2.resize(crop, (side, round(side * h / w)), interpolation=cv2.INTER_AREA)
        return np.asarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), np.uint8)

    return view


def _jpeg(quality: int) -> Callable[[Crop], Crop]:
    def view(crop: Crop) -> Crop:
        ok, data = cv2.imencode(".jpg", np.ascontiguousarray(crop[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB image
            return crop
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
        return np.ascontiguousarray(np.asarray(decoded, np.uint8)[:, :, ::-1])

    return view


def _eyes_covered(crop: Crop) -> Crop:
    """Dark lenses over both eyes of the template (where alignment put them)."""
    h, w = crop.shape[:2]
    sx, sy = w / ARCFACE_SIZE, h / ARCFACE_SIZE
    lenses = np.zeros((h, w), np.float32)
    for x, y in ARCFACE_TEMPLATE[:2]:
        cv2.ellipse(lenses, (round(x * sx), round(y * sy)), (round(15 * sx), round(10 * sy)), 0, 0, 360, 1.0, -1)
    cover = lenses[:, :, None] * 0.9
    return np.clip(crop * (1 - cover) + 20.0 * cover, 0, 255).astype(np.uint8)


# name -> view of an aligned crop. Strengths sit in the middle of what the suite's conditions span.
VIEWS: dict[str, Callable[[Crop], Crop]] = {
    "blur": _blur(1.6),
    "strong_blur": _blur(3.0),
    "low_resolution": _low_resolution(28),
    "jpeg": _jpeg(12),
    "eyes_covered": _eyes_covered,
}


def views(crop: Crop) -> list[Crop]:
    """The crop and its degraded views, in `VIEWS` order after the crop itself."""
    return [crop, *(make(crop) for make in VIEWS.values())]


class TemplateBuilder:
    """Aligned enrollment crops -> (plain embeddings, templates to store), each (N, D) unit vectors.

    The plain embedding is what the face would be as a probe (the conflict gate searches with
    it); the template is the normalised mean over `views`. With `augment` off, both are the
    plain embedding (the service before templates).
    """

    def __init__(self, embedder: Embedder, *, augment: bool = True) -> None:
        self.embedder = embedder
        self.augment = augment

    def build(self, crops: Sequence[Crop]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        if not crops:
            empty = np.zeros((0, self.embedder.manifest.embedding_size), np.float32)
            return empty, empty
        if not self.augment:
            plain = self.embedder.embed(crops)
            return plain, plain
        per = 1 + len(VIEWS)
        every = self.embedder.embed([view for crop in crops for view in views(crop)])  # (N * per, D)
        grouped = every.reshape(len(crops), per, -1)
        return np.ascontiguousarray(grouped[:, 0]), l2_normalize(grouped.mean(axis=1))
