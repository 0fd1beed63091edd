"""Bytes -> RGB pixels, safely.

The header is read before any pixel is decoded, so a decompression bomb is refused
from its declared size. EXIF orientation is applied; grayscale, palette and alpha
images become plain RGB (alpha composited on white).

The bytes come from clients, so every failure to decode them is an `InvalidImage`
(or `UnsupportedImageType`, `ImageTooLarge`): no other exception leaves this module.
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from numpy.typing import NDArray
from PIL import ExifTags, Image, UnidentifiedImageError

from service.errors import FaceIdError, ImageTooLarge, InvalidImage, UnsupportedImageType

log = logging.getLogger(__name__)

# Pillow's format names. PPM covers the PGM/PPM files of classic face sets (ORL). MPO is
# a JPEG followed by more pictures (phones' gain maps, stereo pairs): its first frame,
# the one Pillow opens, is the primary image.
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "PPM"})
DEFAULT_MAX_PIXELS = 40_000_000

_JPEG_FORMATS = frozenset({"JPEG", "MPO"})
# What Pillow raises on malformed bytes in the ordinary way.
_UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError)
# Modes Image.reduce averages correctly (LA and RGBA with premultiplied alpha).
_REDUCIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA"})
_ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset({5, 6, 7, 8})


@contextmanager
def _client_bytes() -> Iterator[None]:
    """Whatever else Pillow raises on client bytes is still a bad image, not a server error.

    Such exceptions are Pillow bugs met on malformed files (the fuzzer found ZeroDivisionError
    and struct.error), so they are logged with their traceback. MemoryError is left alone:
    it is the server running short, not the client's image.
    """
    try:
        yield
    except (FaceIdError, MemoryError):
        raise
    except Exception as exc:
        log.warning("unexpected %s while decoding an image", type(exc).__name__, exc_info=True)
        raise InvalidImage("the image could not be decoded") from exc


def _open(data: bytes) -> Image.Image:
    if not data:
        raise InvalidImage("the file is empty")
    try:
        # Pillow's own bomb guard is replaced by the explicit check in _decode.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from exc
    except (UnidentifiedImageError, *_UNREADABLE) as exc:
        raise InvalidImage("the file is not a readable image") from exc


def probe_image(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from the header alone, without decoding pixels."""
    with _client_bytes():
        image = _open(data)
        return str(image.format), image.width, image.height


def decode_image(
    data: bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    draft_max_side: int | None = None,
) -> NDArray[np.uint8]:
    """Decode an image file to an (H, W, 3) uint8 RGB array, orientation applied.

    With `draft_max_side`, an image whose long side is at least twice that is returned
    downscaled by an integer factor, to the smallest size whose long side is still at
    least `draft_max_side`. A JPEG is decoded with DCT scaling (1/2, 1/4 or 1/8): several
    times cheaper than a full decode, and a properly filtered downscale. Other formats
    are decoded in full and box-filtered (Image.reduce) before anything else is done
    with them, so only the reduced pixels outlive the call.
    """
    return _decode(data, max_pixels, draft_max_side)[0]


def _decode(data: bytes, max_pixels: int, draft_max_side: int | None) -> tuple[NDArray[np.uint8], tuple[int, int]]:
    """The pixels, and the (width, height) of the full-resolution image, orientation applied."""
    with _client_bytes():
        image = _open(data)
        fmt = image.format
        if fmt not in SUPPORTED_FORMATS:
            raise UnsupportedImageType(
                f"image type {fmt or 'unknown'} is not supported; "
                f"use one of {', '.join(sorted(SUPPORTED_FORMATS - {'MPO'}))}"
            )
        width, height = image.size
        if width <= 0 or height <= 0:
            raise InvalidImage("the image has no pixels")
        if width * height > max_pixels:
            raise ImageTooLarge(f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
        side = draft_max_side or 0
        reduce = side > 0 and max(width, height) >= 2 * side
        try:
            if reduce and fmt in _JPEG_FORMATS:
                scale = max(width, height) / side
                # At least 1: a 3000x2 strip would otherwise ask for a height of 0.
                image.draft("RGB", (max(1, int(width / scale)), max(1, int(height / scale))))
            image.load()
            orientation = _orientation(image)
            if reduce and fmt not in _JPEG_FORMATS:
                image = _reduce(image, max(width, height) // side)
            if orientation is not None:
                image = image.transpose(_ORIENTATIONS[orientation])
            rgb = _to_rgb(image)
        except _UNREADABLE as exc:
            raise InvalidImage(f"the image could not be decoded: {exc}") from exc
        full_size = (height, width) if orientation in _SWAPS_AXES else (width, height)
        return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)), full_size


def _orientation(image: Image.Image) -> int | None:
    """The EXIF (or XMP) orientation to undo, or None when there is none or it cannot be read.

    Read by hand rather than with ImageOps.exif_transpose, which also re-encodes the
    whole EXIF block and fails on any broken tag in it. A broken block is ignored: the
    pixels are still good.
    """
    try:
        value = image.getexif().get(ExifTags.Base.Orientation)
    except Exception:  # any failure to parse optional metadata means "no orientation"
        log.debug("unreadable EXIF ignored", exc_info=True)
        return None
    return value if isinstance(value, int) and value in _ORIENTATIONS else None


def _reduce(image: Image.Image, factor: int) -> Image.Image:
    """Box-filter downscale by `factor`; modes reduce cannot average become RGB first."""
    if image.mode not in _REDUCIBLE_MODES:
        image = _to_rgb(image)
    return image.reduce(factor)


class DecodedImage:
    """An image decoded at reduced scale, with the full resolution one call away.

    `reduced` is what detection looks at, and the only pixels kept. `full()` decodes
    every pixel, once, when a face is too small in `reduced` to be aligned from it.
    `scale` maps reduced coordinates to full-resolution ones.
    """

    def __init__(self, data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, reduced_side: int | None = None) -> None:
        self._data = data
        self._max_pixels = max_pixels
        self.reduced, self._size = _decode(data, max_pixels, reduced_side)
        self.scale = max(self._size) / max(self.reduced.shape[:2])
        self._full: NDArray[np.uint8] | None = self.reduced if self.scale == 1.0 else None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) at full resolution, orientation applied."""
        return self._size

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
