"""Encoded image bytes <-> RGB arrays for dataset files (JPEG/PNG payloads of RecordIO and .bin)."""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray


def decode_rgb(data: bytes | bytearray | memoryview | NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Decode an encoded image to (H, W, 3) uint8 RGB (grayscale is expanded)."""
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("payload is not a decodable image")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def encode_rgb(rgb: NDArray[np.uint8], ext: str = ".jpg", quality: int = 95) -> bytes:
    """Encode (H, W, 3) RGB as JPEG (quality 95, InsightFace's default) or PNG."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[:, :, ::-1]), params)
    if not ok:
        raise ValueError(f"could not encode image as {ext}")
    return buf.tobytes()
