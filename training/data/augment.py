"""Photo-like variation for synthetic faces: pose-free geometry, then camera and compression effects.

Pure numpy/OpenCV on (H, W, 3) uint8 RGB, every draw from the `numpy.random.Generator`
passed in, so one seed reproduces a dataset. Geometry (mirror, in-plane rotation,
scale, shift) is applied before detection and alignment, which undo most of it as
they do for real photos; the photometric steps model what cameras and uploads do.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

Image = NDArray[np.uint8]


def _u8(array: object) -> Image:
    """OpenCV's results typed as what they are: uint8 images in, uint8 images out."""
    return np.ascontiguousarray(array, dtype=np.uint8)


@dataclass(frozen=True)
class AugmentOptions:
    flip_p: float = 0.5
    max_rotation: float = 15.0  # degrees, in-plane
    scale: tuple[float, float] = (0.85, 1.15)
    max_shift: float = 0.08  # fraction of the image side
    brightness: float = 0.25  # +- fraction of the range
    contrast: float = 0.25  # +- fraction
    saturation: float = 0.35  # +- fraction
    blur_p: float = 0.3
    blur_sigma: tuple[float, float] = (0.4, 1.6)  # pixels at the working resolution
    noise_p: float = 0.3
    noise_sigma: tuple[float, float] = (2.0, 8.0)  # grey levels
    downscale_p: float = 0.3
    downscale: tuple[float, float] = (0.35, 0.8)  # down then back up: a low-resolution camera
    jpeg_p: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 95)
    grey_p: float = 0.2  # a grey-scale camera or archive: real galleries hold such photos, DCGAN faces are all colour


def flip(image: Image) -> Image:
    return np.ascontiguousarray(image[:, ::-1])


def rotate_scale_shift(image: Image, angle: float, scale: float, shift: tuple[float, float]) -> Image:
    """Rotate by `angle` degrees and scale about the centre, then shift by (dx, dy) pixels; borders replicate."""
    h, w = image.shape[:2]
    matrix = np.asarray(cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, scale), dtype=np.float64)
    matrix[:, 2] += np.asarray(shift, dtype=np.float64)
    return _u8(cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))


def color_jitter(image: Image, brightness: float, contrast: float, saturation: float) -> Image:
    """Brightness shift, contrast about the mean, and saturation about the grey level (factors near 1)."""
    x = image.astype(np.float32)
    grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = grey[..., None] + saturation * (x - grey[..., None])
    x = x.mean() + contrast * (x - x.mean())
    x = x + brightness * 255.0
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def to_grey(image: Image) -> Image:
    """Luma (ITU-R BT.601) in all three channels: what a grey-scale photo becomes when decoded as RGB."""
    grey = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat(np.clip(grey + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def gaussian_blur(image: Image, sigma: float) -> Image:
    return _u8(cv2.GaussianBlur(image, (0, 0), sigmaX=sigma))


def gaussian_noise(image: Image, sigma: float, rng: np.random.Generator) -> Image:
    noisy = image.astype(np.float32) + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.clip(noisy + 0.5, 0, 255).astype(np.uint8)


def downscale(image: Image, factor: float) -> Image:
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    return _u8(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR))


def jpeg(image: Image, quality: int) -> Image:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return _u8(_u8(cv2.imdecode(buf, cv2.IMREAD_COLOR))[:, :, ::-1])


def geometric(image: Image, rng: np.random.Generator, options: AugmentOptions) -> Image:
    if rng.random() < options.flip_p:
        image = flip(image)
    h, w = image.shape[:2]
    angle = rng.uniform(-options.max_rotation, options.max_rotation)
    scale = rng.uniform(*options.scale)
    shift = (rng.uniform(-1, 1) * options.max_shift * w, rng.uniform(-1, 1) * options.max_shift * h)
    return rotate_scale_shift(image, angle, scale, shift)


def photometric(image: Image, rng: np.random.Generator, options: AugmentOptions) -> Image:
    image = color_jitter(
        image,
        brightness=rng.uniform(-options.brightness, options.brightness),
        contrast=1.0 + rng.uniform(-options.contrast, options.contrast),
        saturation=1.0 + rng.uniform(-options.saturation, options.saturation),
    )
    if rng.random() < options.downscale_p:
        image = downscale(image, rng.uniform(*options.downscale))
    if rng.random() < options.blur_p:
        image = gaussian_blur(image, rng.uniform(*options.blur_sigma))
    if rng.random() < options.noise_p:
        image = gaussian_noise(image, rng.uniform(*options.noise_sigma), rng)
    if rng.random() < options.jpeg_p:
        image = jpeg(image, int(rng.integers(options.jpeg_quality[0], options.jpeg_quality[1] + 1)))
    if rng.random() < options.grey_p:  # last: a grey camera's noise and compression are grey too
        image = to_grey(image)
    return image


def augment(image: Image, rng: np.random.Generator, options: AugmentOptions | None = None) -> Image:
    """Geometry then photometry, every parameter drawn from `rng`."""
    options = options or AugmentOptions()
    return photometric(geometric(image, rng, options), rng, options)
