"""Every bad request gets a 4xx JSON error, stores nothing, and leaves the server healthy."""

import io
import struct
import zlib

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import orl, photo
from tests.service.api.conftest import assert_consistent, files, make_client


def gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buffer, "GIF")
    return buffer.getvalue()


def bomb() -> bytes:
    ihdr = struct.pack(">IIBBBBB", 9_000, 9_000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


JPEG = photo("obama.jpg")
CASES = {
    "empty file": (files("images", b""), 422, "invalid_image"),
    "not an image": (files("images", b"%PDF-1.4 hello"), 422, "invalid_image"),
    "truncated jpeg": (files("images", JPEG[: len(JPEG) // 3]), 422, "invalid_image"),
    "unsupported type": (files("images", gif()), 415, "unsupported_media_type"),
    "decompression bomb": (files("images", bomb()), 413, "image_too_large"),
    "no face anywhere": (files("images", orl(1, 1)[:20] + b"\x80" * 10302), 422, "no_face"),
    "too many files": (files("images", *[orl(1, 1)] * 21), 422, "too_many_files"),
    "missing images": ([], 422, "invalid_request"),
}


@pytest.fixture(scope="module")
def shared() -> TestClient:
    with make_client("sqlite://", max_image_bytes=300_000, max_image_pixels=40_000_000) as c:
        yield c


@pytest.mark.parametrize("case", list(CASES))
def test_bad_enroll_is_refused_and_stores_nothing(shared: TestClient, case: str) -> None:
    upload, status, code = CASES[case]
    r = shared.post("/enroll", data={"name": "x"}, files=upload or None)
    assert r.status_code == status, r.json()
    assert r.json()["error"]["code"] == code
    assert r.json()["error"]["message"]
    assert shared.get("/identities").json()["total"] == 0
    assert assert_consistent(shared)["gallery_size"] == 0
    assert shared.get("/health").json() == {"status": "ok"}


def test_form_fields_are_validated(shared: TestClient) -> None:
    ok_image = files("images", orl(1, 1))
    for data in ({}, {"name": ""}, {"name": "x" * 201}, {"name": "   "}, {"name": "a", "external_id": "e" * 201}):
        r = shared.post("/enroll", data=data, files=ok_image)
        assert r.status_code == 422, (data, r.json())
        assert r.json()["error"]["code"] == "invalid_request"
    long = shared.post("/enroll", data={"name": "x" * 201}, files=ok_image).json()["error"]["message"]
    assert long == "name: String should have at most 200 characters", long
    for data in ({"top_k": "0"}, {"top_k": "101"}, {"top_k": "many"}, {"threshold": "2"}):
        r = shared.post("/identify", data=data, files=files("image", orl(1, 1)))
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    assert shared.get("/identities").json()["total"] == 0


def test_file_over_the_byte_limit(shared: TestClient) -> None:
    big = photo("sample3.jpg") * 2  # ~440 KB against a 300 KB limit
    r = shared.post("/identify", files=files("image", big))
    assert r.status_code == 413 and r.json()["error"]["code"] == "image_too_large"


def test_body_over_the_request_limit_is_refused_before_parsing(shared: TestClient) -> None:
    huge = b"x" * (300_000 * 20 + 2 * 1024 * 1024)
    r = shared.post("/identify", content=huge, headers={"content-type": "multipart/form-data; boundary=zzz"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_unknown_routes_and_methods_are_json(shared: TestClient) -> None:
    assert shared.get("/nope").json()["error"]["code"] == "not_found"
    assert shared.get("/enroll").json()["error"]["code"] == "method_not_allowed"
    assert shared.post("/identify", content=b"{}", headers={"content-type": "application/json"}).status_code == 422


def test_openapi_documents_every_endpoint(shared: TestClient) -> None:
    spec = shared.get("/openapi.json").json()
    paths = spec["paths"]
    for path, method in [
        ("/enroll", "post"),
        ("/identify", "post"),
        ("/verify", "post"),
        ("/detect", "post"),
        ("/identities", "get"),
        ("/identities/{identity_id}", "patch"),
        ("/identities/{identity_id}", "delete"),
        ("/identities/{identity_id}/faces", "post"),
        ("/identities/{identity_id}/faces/{face_id}", "delete"),
        ("/health", "get"),
        ("/ready", "get"),
    ]:
        assert method in paths[path], (path, method)
    assert "422" in paths["/enroll"]["post"]["responses"]
    assert shared.get("/docs").status_code == 200
