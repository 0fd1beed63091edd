"""Byte-flip fuzzing of the decoder: whatever the bytes, only FaceIdError leaves it.

Client bytes reach Pillow, and Pillow raises all sorts on malformed files
(ZeroDivisionError, struct.error, ...), each a 500 unless the decoder turns it into an
image error. Seeded and bounded by time and by count, so it runs in CI for a few
seconds; FACEID_FUZZ_SEED and FACEID_FUZZ_SECONDS widen a run by hand. A failure
names the seed file and case, and leaves its bytes in the test's tmp_path.
"""

from __future__ import annotations

import io
import os
import random
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.errors import FaceIdError
from service.vision.decode import DecodedImage, probe_image
from tests.conftest import FIXTURES, ORL, PHOTOS

SEED = int(os.environ.get("FACEID_FUZZ_SEED", "0"))
SECONDS = float(os.environ.get("FACEID_FUZZ_SECONDS", "5"))
MAX_CASES = 5000
REVIEW = FIXTURES / "review"

# Pillow warns about each corrupt EXIF block it skips; here that is expected, by the hundred.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL.*")


def _encoded(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _seeds() -> dict[str, bytes]:
    """The fixtures' photos and an ORL face as they are, and that face in every other format, with EXIF."""
    seeds = {path.name: path.read_bytes() for path in sorted(PHOTOS.iterdir())}
    seeds["orl/s1/1.pgm"] = (ORL / "s1" / "1.pgm").read_bytes()
    seeds.update({f"review/{name}": (REVIEW / name).read_bytes() for name in ("obama_mpf.jpg", "thin.jpg")})
    face = Image.open(ORL / "s1" / "1.pgm").convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "camera"
    for fmt in ("JPEG", "PNG", "WEBP"):
        seeds[f"orl.{fmt.lower()}+exif"] = _encoded(face, fmt, exif=exif.tobytes())
    seeds["orl.bmp"] = _encoded(face, "BMP")
    seeds["orl.ppm"] = _encoded(face, "PPM")
    seeds["orl-rgba.png"] = _encoded(face.convert("RGBA"), "PNG")
    return seeds


def _mutate(data: bytes, rng: random.Random) -> bytes:
    """1 to 4 random bytes, mostly in the headers (where parsers trip), sometimes anywhere; sometimes cut short."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        span = len(out) if rng.random() < 0.3 else min(len(out), 2048)
        out[rng.randrange(span)] = rng.randrange(256)
    if rng.random() < 0.1:
        del out[rng.randrange(1, len(out)) :]
    return bytes(out)


def _escapes(data: bytes) -> BaseException | None:
    """The exception that is not a FaceIdError, if one leaves the decoder; otherwise None."""
    try:
        probe_image(data)
        image = DecodedImage(data, reduced_side=640)
        full = image.full()
        # What did decode is well formed: RGB bytes, and full() agrees with `size`.
        assert image.reduced.dtype == np.uint8 and image.reduced.ndim == 3 and image.reduced.shape[2] == 3
        assert full.shape == (image.size[1], image.size[0], 3)
    except FaceIdError:
        return None
    except Exception as exc:
        return exc
    return None


def _report(name: str, data: bytes, exc: BaseException, tmp_path: Path) -> str:
    path = tmp_path / f"escape_{len(list(tmp_path.iterdir()))}.bin"
    path.write_bytes(data)
    where = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{name}: {type(exc).__name__}: {exc} at {where.filename}:{where.lineno} (bytes in {path})"


@pytest.mark.parametrize("path", sorted(REVIEW.glob("crash_*.bin")), ids=lambda p: p.stem)
def test_the_review_fuzzer_crashes_stay_image_errors(path: Path, tmp_path: Path) -> None:
    data = path.read_bytes()
    exc = _escapes(data)
    assert exc is None, _report(path.name, data, exc, tmp_path)


def test_flipped_bytes_give_only_image_errors(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    seeds = list(_seeds().items())
    escaped: list[str] = []
    deadline = time.monotonic() + SECONDS
    cases = 0
    while cases < MAX_CASES and time.monotonic() < deadline:
        name, original = seeds[cases % len(seeds)]  # round robin: every seed gets its share of the time
        data = _mutate(original, rng)
        exc = _escapes(data)
        if exc is not None and len(escaped) < 10:
            escaped.append(_report(f"seed {SEED}, case {cases}, from {name}", data, exc, tmp_path))
        cases += 1
    assert cases >= 2 * len(seeds), f"only {cases} cases in {SECONDS} s"
    assert not escaped, "\n".join(escaped)
