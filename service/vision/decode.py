"""Bytes -> RGB pixels, safely.

The header is read before any pixel is decoded, so a decompression bomb is refused
from its declared size. EXIF orientation is applied; grayscale, palette and alpha
images become plain RGB (alpha composited on white).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import ImageTooLarge, InvalidImage, UnsupportedImageType

# Pillow's format names. PPM covers the PGM/PPM files of classic face sets (ORL).
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "PPM"})
DEFAULT_MAX_PIXELS = 40_000_000


def _open(data: bytes) -> Image.Image:
    if not data:
        raise InvalidImage("the file is empty")
    try:
        # Pillow's own bomb guard is replaced by the explicit check in decode_image.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidImage("the file is not a readable image") from exc


def probe_image(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from the header alone, without decoding pixels."""
    image = _open(data)
    return str(image.format), image.width, image.height


def decode_image(
    data: bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    draft_max_side: int | None = None,
) -> NDArray[np.uint8]:
    """Decode an image file to an (H, W, 3) uint8 RGB array, orientation applied.

    With `draft_max_side`, a JPEG is decoded with DCT scaling (1/2, 1/4 or 1/8) to
    the smallest size whose long side is still at least `draft_max_side`: several
    times cheaper than a full decode, and a properly filtered downscale.
    """
    image = _open(data)
    fmt = image.format
    if fmt not in SUPPORTED_FORMATS:
        raise UnsupportedImageType(
            f"image type {fmt or 'unknown'} is not supported; use one of {', '.join(sorted(SUPPORTED_FORMATS))}"
        )
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidImage("the image has no pixels")
    if width * height > max_pixels:
        raise ImageTooLarge(f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
    try:
        if draft_max_side and fmt == "JPEG" and max(width, height) >= 2 * draft_max_side:
            scale = max(width, height) / draft_max_side
            image.draft("RGB", (int(width / scale), int(height / scale)))
        image.load()
        image = ImageOps.exif_transpose(image) or image
        rgb = _to_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InvalidImage(f"the image could not be decoded: {exc}") from exc
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


class DecodedImage:
    """An image decoded at reduced scale, with the full resolution one call away.

    `reduced` is what detection looks at. `full()` decodes every pixel, once, when a
    face is too small in `reduced` to be aligned from it. `scale` maps reduced
    coordinates to full-resolution ones.
    """

    def __init__(self, data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, reduced_side: int | None = None) -> None:
        self._data = data
        self._max_pixels = max_pixels
        _, width, height = probe_image(data)
        self.reduced = decode_image(data, max_pixels, draft_max_side=reduced_side)
        self.scale = max(width, height) / max(self.reduced.shape[:2])
        self._full: NDArray[np.uint8] | None = self.reduced if self.scale == 1.0 else None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) at full resolution, orientation applied."""
        h, w = self.reduced.shape[:2]
        return round(w * self.scale), round(h * self.scale)

    def full(self) -> NDArray[np.uint8]:
        if self._full is None:
            self._full = decode_image(self._data, self._max_pixels)
        return self._full


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: scale to 8 bits instead of clipping.
        array = np.asarray(image, dtype=np.float32)
        peak = float(array.max()) or 1.0
        image = Image.fromarray((array * (255.0 / max(peak, 255.0))).astype(np.uint8))
    return image.convert("RGB")
