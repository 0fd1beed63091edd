"""Five-point face alignment to the ArcFace 112x112 template.

Pure numpy/OpenCV: the service and `training prepare` both call `align_face`, so
training crops and serving crops are the same by construction.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

# The de-facto ArcFace template for a 112x112 crop (insightface `arcface_dst`):
# image-left eye, image-right eye, nose tip, left mouth corner, right mouth corner.
ARCFACE_TEMPLATE: NDArray[np.float32] = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)
ARCFACE_SIZE = 112


def similarity_transform(src: NDArray[np.floating], dst: NDArray[np.floating]) -> NDArray[np.float64]:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src to dst.

    Umeyama (1991), without reflection. `src` and `dst` are (N, 2); returns a 2x3 matrix.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need two (N, 2) point sets with N >= 2, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    var_src = (src_c**2).sum() / len(src)
    scale = float((s * d).sum() / var_src) if var_src > 0 else 1.0
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = dst_mean - scale * rot @ src_mean
    return matrix


def template_for(size: tuple[int, int]) -> NDArray[np.float32]:
    """The ArcFace template scaled to an output of (width, height).

    112x112 is the template itself; 128x128 and other squares scale it, and the
    common 96x112 crop shifts x by -8 as insightface does.
    """
    w, h = size
    if (w, h) == (ARCFACE_SIZE, ARCFACE_SIZE):
        return ARCFACE_TEMPLATE.copy()
    if (w, h) == (96, 112):
        return ARCFACE_TEMPLATE - np.array([8.0, 0.0], dtype=np.float32)
    return (ARCFACE_TEMPLATE * np.array([w / ARCFACE_SIZE, h / ARCFACE_SIZE], dtype=np.float32)).astype(np.float32)


def align_face(
    image: NDArray[np.uint8],
    landmarks: NDArray[np.floating],
    size: tuple[int, int] = (ARCFACE_SIZE, ARCFACE_SIZE),
) -> NDArray[np.uint8]:
    """Warp `image` (H, W, C) so the 5 `landmarks` (5, 2) land on the template.

    Returns the aligned crop (size[1], size[0], C), same channel order as the input.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    matrix = similarity_transform(landmarks, template_for(size))
    crop = cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return np.asarray(crop, dtype=np.uint8)
