import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from service.errors import ImageTooLarge, InvalidImage, UnsupportedImageType
from service.vision.decode import DecodedImage, decode_image, probe_image
from service.vision.detect import YuNetDetector
from service.vision.pipeline import FacePipeline
from tests.conftest import FIXTURES, orl, photo

REVIEW = FIXTURES / "review"


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP"])
def test_decodes_supported_formats_to_rgb(fmt: str) -> None:
    source = Image.new("RGB", (64, 48), (200, 30, 60))
    out = decode_image(encode(source, fmt))
    assert out.shape == (48, 64, 3)
    assert out.dtype == np.uint8
    assert abs(int(out[10, 10, 0]) - 200) < 8 and abs(int(out[10, 10, 1]) - 30) < 8


def test_grayscale_pgm_becomes_three_channels() -> None:
    out = decode_image(orl(1, 1))
    assert out.shape == (112, 92, 3)
    assert (out[..., 0] == out[..., 1]).all()


def test_alpha_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    out = decode_image(encode(rgba, "PNG"))
    assert (out == 255).all()


def test_exif_orientation_is_applied() -> None:
    source = Image.new("RGB", (80, 40), (0, 0, 0))
    source.paste((255, 255, 255), (0, 0, 20, 40))  # white band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = decode_image(encode(source, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.shape == (80, 40, 3)  # portrait after rotation
    assert out[5, 20].mean() > 200 and out[-5, 20].mean() < 50  # the band is now on top


def test_empty_and_garbage_and_truncated_are_invalid() -> None:
    with pytest.raises(InvalidImage):
        decode_image(b"")
    with pytest.raises(InvalidImage):
        decode_image(b"definitely not an image" * 10)
    jpeg = photo("obama.jpg")
    with pytest.raises(InvalidImage):
        decode_image(jpeg[: len(jpeg) // 2])


def test_unsupported_type_is_refused() -> None:
    with pytest.raises(UnsupportedImageType):
        decode_image(encode(Image.new("RGB", (8, 8)), "GIF"))


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but carries almost no data (a bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
        + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    )  # fmt: skip


def test_decompression_bomb_is_refused_from_the_header() -> None:
    bomb = _png_claiming(10_000, 5_000)
    assert len(bomb) < 200
    assert probe_image(bomb) == ("PNG", 10_000, 5_000)
    with pytest.raises(ImageTooLarge, match="pixels"):
        decode_image(bomb, max_pixels=40_000_000)
    with pytest.raises(ImageTooLarge):
        decode_image(_png_claiming(60_000, 60_000))


def test_large_jpeg_can_be_drafted_at_reduced_scale() -> None:
    big = encode(Image.new("RGB", (4000, 3000), (10, 20, 30)), "JPEG")
    assert decode_image(big, draft_max_side=1000).shape[1] <= 2000


def test_decoded_image_detects_at_reduced_scale_and_keeps_full_resolution_at_hand() -> None:
    big = encode(Image.open(io.BytesIO(photo("obama.jpg"))).resize((3640, 4548)), "JPEG", quality=90)
    image = DecodedImage(big, reduced_side=640)
    assert image.scale == pytest.approx(4.0, rel=0.01)
    assert max(image.reduced.shape[:2]) >= 640
    assert image.size == (3640, 4548)
    assert image.full().shape == (4548, 3640, 3)
    small = DecodedImage(photo("obama.jpg"), reduced_side=640)  # under 2x the side: decoded as is
    assert small.scale == 1.0 and small.full() is small.reduced


def test_a_thin_jpeg_decodes_at_reduced_scale() -> None:
    # 3000x2: the reduced-size decode used to ask Pillow for a height of 0 (ZeroDivisionError, a 500).
    data = (REVIEW / "thin.jpg").read_bytes()
    image = DecodedImage(data, reduced_side=640)
    assert image.size == (3000, 2)
    assert image.reduced.shape[0] >= 1 and image.reduced.shape[1] >= 640
    assert abs(int(image.reduced.mean()) - 90) < 4
    assert image.full().shape == (2, 3000, 3)


def test_a_thin_jpeg_has_no_face_through_the_pipeline(detector: YuNetDetector) -> None:
    image, faces = FacePipeline(detector).find((REVIEW / "thin.jpg").read_bytes())
    assert faces == [] and image.size == (3000, 2)


def test_a_broken_exif_tag_does_not_stop_the_orientation_or_the_pixels() -> None:
    # Orientation 6 is readable; tag 258 holds ASCII where Pillow expects a number, and
    # Pillow's exif_transpose failed re-encoding it (struct.error, a 500).
    out = decode_image((REVIEW / "exif258.jpg").read_bytes())
    upright = decode_image(orl(1, 1))  # the same face, 92x112, without EXIF
    assert out.shape == (92, 112, 3)  # rotated to display
    assert np.abs(out.astype(int) - np.rot90(upright, k=-1).astype(int)).mean() < 6


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("crash_jpeg_exif_struct.bin", (80, 64)),  # a broken EXIF tag: the pixels are fine, and rotated
        ("crash_jpeg_exif_zerodivision.bin", (48720, 64)),  # a 64x48720 strip drafted to a width of 0
        ("crash_jpeg_zerodivision.bin", None),  # the same, and its data ends early
    ],
)
def test_fuzzer_crashes_decode_or_are_invalid_images(name: str, size: tuple[int, int] | None) -> None:
    data = (REVIEW / name).read_bytes()
    if size is None:
        with pytest.raises(InvalidImage):
            DecodedImage(data, reduced_side=640)
    else:
        image = DecodedImage(data, reduced_side=640)
        assert image.size == size and image.full().shape == (size[1], size[0], 3)


def test_a_jpeg_with_a_second_picture_decodes_its_primary_image() -> None:
    # MPO, as phones write for gain maps: Pillow calls it "MPO", and it was refused with 415.
    data = (REVIEW / "obama_mpf.jpg").read_bytes()
    out = decode_image(data)
    plain = decode_image(photo("obama.jpg"))  # the same picture, without the second one
    assert out.shape == plain.shape == (1137, 910, 3)
    assert np.abs(out.astype(int) - plain.astype(int)).mean() < 5
    drafted = DecodedImage(data, reduced_side=320)
    assert drafted.scale == pytest.approx(2.0, rel=0.01) and drafted.size == (910, 1137)


def test_a_jpeg_with_a_second_picture_gives_its_face_through_the_pipeline(detector: YuNetDetector) -> None:
    image, faces = FacePipeline(detector).find((REVIEW / "obama_mpf.jpg").read_bytes())
    assert len(faces) == 1 and faces[0].score > 0.8
    (crop,) = FacePipeline(detector).crops([(image, faces[0])], (112, 112))
    assert crop.shape == (112, 112, 3)


def _checkerboard(width: int, height: int) -> Image.Image:
    """1-pixel black and white squares: a filtered downscale gives grey, subsampling gives black or white."""
    yy, xx = np.mgrid[0:height, 0:width]
    return Image.fromarray((((xx + yy) % 2) * 255).astype(np.uint8)).convert("RGB")


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP", "PPM"])
def test_large_non_jpeg_keeps_only_a_filtered_reduced_copy(fmt: str) -> None:
    source = _checkerboard(2600, 2000)
    data = encode(source, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    image = DecodedImage(data, reduced_side=640)
    assert 640 <= max(image.reduced.shape[:2]) < 1280
    assert image.reduced.nbytes < 2600 * 2000 * 3 / 8
    assert image.scale == pytest.approx(4.0, rel=0.01) and image.size == (2600, 2000)
    assert np.abs(image.reduced.astype(int) - 127).max() <= 2  # averaged, not subsampled
    full = image.full()  # decoded again, on demand
    assert full.shape == (2000, 2600, 3) and set(np.unique(full)) == {0, 255}


def test_large_images_keep_alpha_16_bit_and_orientation_rules_when_reduced() -> None:
    transparent = DecodedImage(encode(Image.new("RGBA", (2600, 1820), (0, 0, 0, 0)), "PNG"), reduced_side=640)
    assert transparent.reduced.shape[:2] == (455, 650) and (transparent.reduced == 255).all()
    grey16 = Image.fromarray(np.full((1820, 2600), 4000, np.uint16))
    assert grey16.mode.startswith("I;16")
    reduced = DecodedImage(encode(grey16, "PNG"), reduced_side=640).reduced
    assert reduced.shape[:2] == (455, 650) and (reduced == 255).all()  # scaled to 8 bits, not clipped
    wide = Image.new("RGB", (2600, 1820), (0, 0, 0))
    wide.paste((255, 255, 255), (0, 0, 520, 1820))  # white band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    rotated = DecodedImage(encode(wide, "PNG", exif=exif.tobytes()), reduced_side=640)
    assert rotated.size == (1820, 2600) and rotated.reduced.shape[:2] == (650, 455)
    assert rotated.reduced[10, 227].mean() > 200 and rotated.reduced[-10, 227].mean() < 50  # the band is on top


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_every_exif_orientation_is_undone_as_pillow_does(fmt: str, orientation: int) -> None:
    # Orientation is read by hand (exif_transpose fails on any broken tag): it must agree with Pillow's.
    source = Image.fromarray(np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(source, fmt, exif=exif.tobytes(), **({"lossless": True} if fmt == "WEBP" else {"quality": 95}))
    with Image.open(io.BytesIO(data)) as opened:
        expected = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    out = decode_image(data)
    assert out.shape == expected.shape
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
    assert DecodedImage(data).size == (expected.shape[1], expected.shape[0])


@pytest.mark.parametrize("error", [ZeroDivisionError, IndexError, KeyError, TypeError, RuntimeError])
def test_an_unforeseen_pillow_error_is_an_invalid_image_and_is_logged(
    error: type[Exception], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Stands in for the next Pillow bug the fuzzer has not met yet.
    def broken(self: Image.Image, method: object) -> None:
        raise error("a Pillow bug")

    monkeypatch.setattr(Image.Image, "transpose", broken)
    data = encode(Image.new("RGB", (40, 30)), "JPEG", exif=_orientation_6())
    with pytest.raises(InvalidImage, match="could not be decoded"):
        DecodedImage(data)
    assert error.__name__ in caplog.text


def test_running_out_of_memory_is_not_blamed_on_the_image(monkeypatch: pytest.MonkeyPatch) -> None:
    def exhausted(self: Image.Image, method: object) -> None:
        raise MemoryError

    monkeypatch.setattr(Image.Image, "transpose", exhausted)
    with pytest.raises(MemoryError):
        decode_image(encode(Image.new("RGB", (40, 30)), "JPEG", exif=_orientation_6()))


def _orientation_6() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif.tobytes()
