"""Face detection with YuNet: boxes, 5 landmarks and scores.

Detection runs on a copy scaled down to `max_side` (cost bounded by that, not by
the photo's megapixels); coordinates are mapped back to the full-resolution image,
which alignment then samples from. Faces that fill the whole frame (tight crops)
have no context around them for the detector, so when nothing is found the image
is padded and searched again.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Face:
    box: NDArray[np.float32]  # (4,) x1, y1, x2, y2 in image pixels
    landmarks: NDArray[np.float32]  # (5, 2) eyes, nose tip, mouth corners; image-left first
    score: float
    # Counter-clockwise quarter turns (np.rot90) of the image in which the face was found
    # upright, its box and landmarks mapped back (service.vision.upright); 0 for most faces.
    turns: int = 0
    # The aligned crop reads as a face on its side or upside down, yet no upright face was found
    # at its place (service.vision.upright): its five points are wrong, and so would be a match.
    misaligned: bool = False

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return float(max(0.0, x2 - x1) * max(0.0, y2 - y1))


class Detector(Protocol):
    name: str

    def detect(self, image: NDArray[np.uint8]) -> list[Face]:
        """Faces in an (H, W, 3) RGB image, largest first."""
        ...


@dataclass(frozen=True)
class DetectorOptions:
    score_threshold: float = 0.6
    nms_threshold: float = 0.3
    max_side: int = 640
    pad_ratio: float = 0.5  # of width/height on each side, for the retry on tight crops
    min_face: int = 12  # pixels, shorter box side in the original image


def detection_input(image: NDArray[np.uint8], max_side: int) -> tuple[NDArray[np.uint8], float]:
    """An (H, W, 3) RGB image as the BGR copy a detector runs on, scaled down so that its long side
    is at most `max_side` (never below one pixel a side), and the scale applied."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got {image.shape}")
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale != 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)
    return np.ascontiguousarray(image[:, :, ::-1]), scale


class YuNetDetector:
    """OpenCV's YuNet (MIT). cv2.FaceDetectorYN keeps per-call state, so one per thread."""

    def __init__(self, model: bytes, options: DetectorOptions | None = None, name: str = "yunet") -> None:
        self.name = name
        self.options = options or DetectorOptions()
        self._model = np.frombuffer(model, dtype=np.uint8)
        self._local = threading.local()
        self._create()  # fail at start-up, not on the first request

    def _create(self) -> cv2.FaceDetectorYN:
        detector = getattr(self._local, "detector", None)
        if detector is None:
            # OpenCV 5 warns on every creation that its new graph engine ignores the
            # preferable target (CPU is the only one used): noise in the start-up log.
            logging = cv2.utils.logging
            level = logging.getLogLevel()
            logging.setLogLevel(min(level, logging.LOG_LEVEL_ERROR))
            try:
                detector = cv2.FaceDetectorYN.create(
                    "onnx",
                    self._model,
                    np.array([], dtype=np.uint8),
                    (320, 320),
                    self.options.score_threshold,
                    self.options.nms_threshold,
                    5000,
                )
            finally:
                logging.setLogLevel(level)
            self._local.detector = detector
        return detector

    def _run(self, bgr: NDArray[Any]) -> NDArray[np.float32]:
        detector = self._create()
        h, w = bgr.shape[:2]
        detector.setInputSize((w, h))
        _, found = detector.detect(bgr)
        return np.zeros((0, 15), np.float32) if found is None else found.astype(np.float32)

    def detect(self, image: NDArray[np.uint8]) -> list[Face]:
        bgr, scale = detection_input(image, self.options.max_side)
        h, w = image.shape[:2]
        rows = self._run(bgr)
        offset = np.zeros(2, np.float32)
        if len(rows) == 0 and self.options.pad_ratio > 0:
            sh, sw = bgr.shape[:2]
            pad_y, pad_x = round(sh * self.options.pad_ratio), round(sw * self.options.pad_ratio)
            padded = cv2.copyMakeBorder(bgr, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            rows = self._run(padded)
            offset = np.array([pad_x, pad_y], np.float32)
        return self._to_faces(rows, offset, scale, (w, h))

    def _to_faces(
        self, rows: NDArray[np.float32], offset: NDArray[np.float32], scale: float, size: tuple[int, int]
    ) -> list[Face]:
        w, h = size
        faces = []
        for row in rows:
            x, y, bw, bh = row[:4]
            box = (np.array([x, y, x + bw, y + bh], np.float32) - np.tile(offset, 2)) / scale
            box = np.clip(box, 0, [w, h, w, h]).astype(np.float32)
            landmarks = ((row[4:14].reshape(5, 2) - offset) / scale).astype(np.float32)
            face = Face(box=box, landmarks=landmarks, score=float(row[14]))
            if min(box[2] - box[0], box[3] - box[1]) >= self.options.min_face:
                faces.append(face)
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces


def largest_face(faces: list[Face]) -> Face | None:
    return max(faces, key=lambda f: f.area) if faces else None
