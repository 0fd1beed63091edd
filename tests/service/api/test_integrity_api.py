"""The integrity review's API findings (issue 13): what must be a 4xx, what a read returns, and
the limits that bound one request."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.exc import OperationalError

from tests.conftest import orl, photo
from tests.service.api.conftest import assert_consistent, files, make_client


def test_a_client_holding_a_deleted_id_gets_404_and_stores_nothing(client: TestClient) -> None:
    ada = client.post("/enroll", data={"name": "Ada"}, files=files("images", orl(1, 1))).json()["identity"]
    assert client.delete(f"/identities/{ada['id']}").status_code == 204
    bob = client.post("/enroll", data={"name": "Bob"}, files=files("images", orl(2, 1))).json()["identity"]
    assert bob["id"] != ada["id"]
    r = client.post(f"/identities/{ada['id']}/faces", files=files("images", orl(1, 2)))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert client.get(f"/identities/{bob['id']}").json()["faces"] == 1
    probe = client.post("/identify", files=files("image", orl(1, 3))).json()["faces"][0]
    assert probe["decision"] == "unknown"  # Ada's face is nobody's now, certainly not Bob's
    assert_consistent(client)


@pytest.mark.parametrize("field", ["name", "external_id"])
def test_nul_and_control_characters_are_422_on_every_database(client: TestClient, field: str) -> None:
    data = {"name": "Ada", field: "Ada\x00Lovelace"}
    r = client.post("/enroll", data=data, files=files("images", orl(1, 1)))
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", r.json()
    assert client.get("/identities", params={"name": "a\x00"}).status_code == 422
    ok = client.post("/enroll", data={"name": "Ada"}, files=files("images", orl(1, 1))).json()["identity"]
    r = client.patch(f"/identities/{ok['id']}", json={field: "x\x00y"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    assert client.get("/identities").json()["total"] == 1
    assert client.get(f"/identities/{ok['id']}").json()["name"] == "Ada"


def test_reads_return_utc_with_an_offset(client: TestClient) -> None:
    created = client.post("/enroll", data={"name": "Ada"}, files=files("images", orl(1, 1))).json()["identity"]
    for body in (
        client.get(f"/identities/{created['id']}").json(),
        client.get("/identities").json()["items"][0],
        client.get(f"/identities/{created['id']}/faces").json()["items"][0],
    ):
        assert body["created_at"].endswith(("Z", "+00:00")), body


@pytest.fixture
def small_limits(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(f"sqlite:///{tmp_path / 'l.db'}", max_image_bytes=100_000, max_images_per_request=2) as c:
        yield c


def test_a_chunked_upload_over_the_limit_is_413(small_limits: TestClient) -> None:
    limit = 100_000 * 2 + 1024 * 1024

    def body() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield b'--zzz\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\n'
        for _ in range(limit // 65536 + 4):
            yield b"x" * 65536
        yield b"\r\n--zzz--\r\n"

    r = small_limits.post("/identify", content=body(), headers={"content-type": "multipart/form-data; boundary=zzz"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large", r.text


def test_more_files_than_the_multipart_parser_takes_is_422_too_many_files(small_limits: TestClient) -> None:
    r = small_limits.post("/enroll", data={"name": "x"}, files=files("images", *[b"x"] * 1001))
    assert r.status_code == 422 and r.json()["error"]["code"] == "too_many_files", r.text


def test_malformed_multipart_is_a_documented_4xx(small_limits: TestClient) -> None:
    r = small_limits.post(
        "/identify", content=b"--zzz\r\nnot a header\r\n", headers={"content-type": "multipart/form-data; boundary=zzz"}
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", r.text


def test_ready_names_a_database_failure_without_its_details(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    recognizer = client.app.state.components.collections  # type: ignore[attr-defined]

    def down(*args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT secret_table", {}, Exception('connection to "db.internal" port 5432 failed'))

    monkeypatch.setattr(recognizer.store, "changes_since", down)
    r = client.get("/ready")
    assert r.status_code == 503
    body = r.json()
    assert body["database"] == "unreachable" and body["database_error"] == "unavailable"
    assert "5432" not in r.text and "secret_table" not in r.text and "internal" not in r.text


def test_faces_per_image_are_capped_and_the_caller_told(tmp_path: Path) -> None:
    with make_client(f"sqlite:///{tmp_path / 'c.db'}", max_faces_per_image=2) as c:
        group = photo("t1.jpg")
        body = c.post("/identify", files=files("image", group)).json()
        assert len(body["faces"]) == 2 and body["faces_detected"] == 6 and body["faces_omitted"] == 4
        detected = c.post("/detect", files=files("image", group)).json()
        assert len(detected["faces"]) == 2 and detected["faces_omitted"] == 4
        areas = [(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]) for f in detected["faces"]]
        assert areas == sorted(areas, reverse=True)  # the largest are the ones kept


MEASURE = """
import io, json, resource, sys
from service.app import build_collections
from service.settings import Settings
r = build_collections(Settings(database_url=sys.argv[1], sync_interval=0, providers=["CPUExecutionProvider"])).recognizer("default")
png = open(sys.argv[2], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
r.enroll("big", [png] * int(sys.argv[3]))
print(json.dumps({"before_kb": before, "after_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


@pytest.mark.slow
def test_an_enroll_of_many_large_images_holds_one_decoded_image_at_a_time(tmp_path: Path) -> None:
    """20 copies of a large PNG (no reduced-size decode for PNG) once held every decoded image
    until all were embedded. Peak memory must not grow with the number of images."""
    face = Image.open(io.BytesIO(photo("obama.jpg"))).convert("RGB")
    canvas = Image.new("RGB", (3000, 3300), (90, 110, 120))
    canvas.paste(face.resize((1200, 1200)), (900, 1000))
    path = tmp_path / "big.png"
    canvas.save(path, compress_level=1)
    peaks = {}
    for count in (1, 12):
        out = subprocess.run(
            [sys.executable, "-c", MEASURE, f"sqlite:///{tmp_path / f'm{count}.db'}", str(path), str(count)],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[3],
        )
        m = json.loads(out.stdout.strip().splitlines()[-1])
        peaks[count] = (m["after_kb"] - m["before_kb"]) / 1024
    one_image_mb = 3000 * 3300 * 3 / 2**20  # 28 MB of RGB
    # 12 images held at once would add 11 x 28 MB = 311 MB; one at a time adds little.
    assert peaks[12] - peaks[1] < 3 * one_image_mb, peaks
    assert np.isfinite(peaks[1])


REVIEW = Path(__file__).resolve().parents[2] / "fixtures" / "review"


@pytest.mark.parametrize("name", sorted(p.name for p in REVIEW.iterdir() if p.suffix in (".jpg", ".bin")))
def test_a_file_that_crashed_the_decoder_is_a_4xx_and_rejects_only_itself_in_an_enroll(
    tmp_path: Path, name: str
) -> None:
    with make_client(f"sqlite:///{tmp_path / 'r.db'}") as client:
        check_review_file(client, name)


def check_review_file(small_limits: TestClient, name: str) -> None:
    bad = (REVIEW / name).read_bytes()
    for route, field in (("/detect", "image"), ("/identify", "image")):
        r = small_limits.post(route, files=files(field, bad))
        assert r.status_code in (200, 422), (route, r.status_code, r.text)
    r = small_limits.post("/enroll", data={"name": f"with {name}"}, files=files("images", orl(7, 1), bad))
    assert r.status_code == 201, r.text  # one bad file no longer fails the whole enroll
    accepted = [a["image"] for a in r.json()["accepted"]]
    rejected = {x["image"]: x["code"] for x in r.json()["rejected"]}
    assert accepted[0] == 0 and sorted(accepted + list(rejected)) == [0, 1]
    assert set(rejected.values()) <= {"invalid_image", "no_face", "ambiguous_faces", "image_too_small", "low_quality"}
    if name == "obama_mpf.jpg":  # a JPEG carrying a second picture is still a photo
        assert accepted == [0, 1]
