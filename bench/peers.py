"""The peers to beat: InsightFace's SCRFD-0.5GF detector and ArcFace MobileFaceNet (buffalo_s).

Benchmarks only. The weights are licensed for non-commercial research, so they are
read from the shared assets at bench time and never shipped (`bench.common.shared_asset`).
SCRFD's output decoding follows insightface `python-package/insightface/model_zoo/scrfd.py`:
three strides (8, 16, 32), two anchors per location, distances to box sides and to
the five keypoints, then NMS.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from service.vision.detect import Face

STRIDES = (8, 16, 32)
ANCHORS_PER_LOCATION = 2


def _session(path: Path, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads > 0:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def anchor_centers(height: int, width: int, stride: int) -> NDArray[np.float32]:
    """(H/s * W/s * 2, 2) anchor centres (x, y) in input pixels, row-major, each repeated per anchor."""
    ys, xs = np.mgrid[: height // stride, : width // stride]
    centers = (np.stack([xs, ys], axis=-1).reshape(-1, 2) * stride).astype(np.float32)
    return np.repeat(centers, ANCHORS_PER_LOCATION, axis=0)


def distance2bbox(points: NDArray[np.float32], distance: NDArray[np.float32]) -> NDArray[np.float32]:
    """Centres (N, 2) and distances to the left, top, right, bottom sides (N, 4) -> (N, 4) x1 y1 x2 y2."""
    return np.concatenate([points - distance[:, :2], points + distance[:, 2:4]], axis=1)


def distance2kps(points: NDArray[np.float32], distance: NDArray[np.float32]) -> NDArray[np.float32]:
    """Centres (N, 2) and keypoint offsets (N, 10) -> (N, 5, 2)."""
    return (distance.reshape(len(points), -1, 2) + points[:, None, :]).astype(np.float32)


def nms(boxes: NDArray[np.float32], scores: NDArray[np.float32], threshold: float) -> list[int]:
    """Greedy non-maximum suppression by IoU, highest score first; indices kept."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
        iou = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[1:][iou <= threshold]
    return keep


class ScrfdDetector:
    """SCRFD with keypoints, run like the service runs YuNet: on a copy scaled to `max_side`.

    The scaled image is padded (bottom/right) to a multiple of 32 rather than to a
    fixed square, so the peer does no more work than the image needs.
    """

    name = "scrfd_500m"

    def __init__(
        self,
        path: Path,
        *,
        max_side: int = 640,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.4,
        threads: int = 0,
    ) -> None:
        self.session = _session(path, threads)
        self.input = self.session.get_inputs()[0].name
        self.max_side = max_side
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self._centers: dict[tuple[int, int, int], NDArray[np.float32]] = {}

    def _centers_for(self, height: int, width: int, stride: int) -> NDArray[np.float32]:
        key = (height, width, stride)
        if key not in self._centers:
            self._centers[key] = anchor_centers(height, width, stride)
        return self._centers[key]

    def detect(self, image: NDArray[np.uint8]) -> list[Face]:
        """Faces in an (H, W, 3) RGB image, largest first."""
        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        small = (
            image
            if scale == 1.0
            else cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        )
        sh, sw = small.shape[:2]
        ph, pw = -(-sh // 32) * 32, -(-sw // 32) * 32
        canvas = np.zeros((ph, pw, 3), np.float32)
        canvas[:sh, :sw] = small
        blob = ((canvas - 127.5) / 128.0).transpose(2, 0, 1)[None]  # (1, 3, H, W) RGB
        outs = self.session.run(None, {self.input: np.ascontiguousarray(blob, np.float32)})
        boxes, kpss, scores = [], [], []
        n = len(STRIDES)
        for i, stride in enumerate(STRIDES):
            score = outs[i].reshape(-1)
            keep = np.flatnonzero(score >= self.score_threshold)
            if keep.size == 0:
                continue
            centers = self._centers_for(ph, pw, stride)[keep]
            boxes.append(distance2bbox(centers, outs[i + n].reshape(-1, 4)[keep] * stride))
            kpss.append(distance2kps(centers, outs[i + 2 * n].reshape(-1, 10)[keep] * stride))
            scores.append(score[keep])
        if not boxes:
            return []
        all_boxes = np.concatenate(boxes) / scale
        all_kps = np.concatenate(kpss) / scale
        all_scores = np.concatenate(scores)
        faces = [
            Face(
                box=np.clip(all_boxes[k], 0, [w, h, w, h]).astype(np.float32),
                landmarks=all_kps[k].astype(np.float32),
                score=float(all_scores[k]),
            )
            for k in nms(all_boxes, all_scores, self.nms_threshold)
        ]
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces


class MbfEmbedder:
    """ArcFace MobileFaceNet (w600k_mbf): 112x112 RGB crops, (x - 127.5) / 127.5, 512-d, dynamic batch."""

    name = "mbf_w600k"
    dim = 512

    def __init__(self, path: Path, *, threads: int = 0) -> None:
        self.session = _session(path, threads)
        self.input = self.session.get_inputs()[0].name

    def embed(self, crops: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]:
        """(N, 112, 112, 3) RGB aligned crops -> (N, 512) unit vectors."""
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        x = ((np.stack(crops).astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2)
        out = self.session.run(None, {self.input: np.ascontiguousarray(x)})[0].astype(np.float32)
        return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)
