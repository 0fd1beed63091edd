"""A real server process driven over HTTP."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.conftest import orl, photo
from tests.integration.server import AUTH, Server


def enroll(base: str, name: str, *images: bytes) -> httpx.Response:
    return httpx.post(
        headers=AUTH,
        url=base + "/enroll",
        data={"name": name, "allow_conflict": "true"},  # several tests enroll the same ORL people again
        files=[("images", (f"{i}.pgm", b, "image/x-portable-graymap")) for i, b in enumerate(images)],
        timeout=60,
    )


def identify(base: str, image: bytes) -> dict:
    r = httpx.post(
        headers=AUTH, url=base + "/identify", files={"image": ("probe", image, "application/octet-stream")}, timeout=60
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_enroll_identify_restart_identify(db_url: str, tmp_path: Path) -> None:
    server = Server(db_url, tmp_path / "server.log")
    with server:
        assert enroll(server.url, "s5", orl(5, 1), orl(5, 2)).status_code == 201
        assert enroll(server.url, "Obama", photo("obama.jpg")).status_code == 201
        assert identify(server.url, orl(5, 7))["faces"][0]["identity"]["name"] == "s5"
        ready = httpx.get(headers=AUTH, url=server.url + "/ready").json()
        assert ready["model"]["provider"] == "CPUExecutionProvider" and ready["gallery_size"] == 3
    with server:  # same database, new process: the gallery comes back from the database
        assert httpx.get(headers=AUTH, url=server.url + "/ready").json()["gallery_size"] == 3
        assert identify(server.url, orl(5, 9))["faces"][0]["identity"]["name"] == "s5"
        assert identify(server.url, photo("obama2.jpg"))["faces"][0]["identity"]["name"] == "Obama"
        assert identify(server.url, orl(16, 1))["faces"][0]["decision"] == "unknown"


def test_dozens_of_concurrent_enrolls_and_identifies(db_url: str, tmp_path: Path) -> None:
    with Server(db_url, tmp_path / "server.log") as server:
        assert enroll(server.url, "s1", orl(1, 1)).status_code == 201

        def job(n: int) -> tuple[str, int, dict]:
            if n % 2 == 0:
                person = 2 + n // 2 % 18
                r = enroll(server.url, f"p{n}", orl(person, 1 + n % 10))
                return "enroll", r.status_code, r.json()
            r = httpx.post(
                headers=AUTH,
                url=server.url + "/identify",
                files={"image": ("p", orl(1, 1 + n % 10), "image/x-portable-graymap")},
                timeout=120,
            )
            return "identify", r.status_code, r.json()

        with ThreadPoolExecutor(max_workers=24) as pool:
            results = list(pool.map(job, range(48)))
        assert all(status in (200, 201) for _, status, _ in results), [r for r in results if r[1] >= 300][:3]
        for kind, _, body in results:
            if kind == "identify":
                assert body["faces"][0]["decision"] == "match" and body["faces"][0]["identity"]["name"] == "s1"
        ready = httpx.get(headers=AUTH, url=server.url + "/ready").json()
        assert ready["in_sync"] and ready["gallery_size"] == ready["searchable_faces_in_db"] == 25
        assert httpx.get(headers=AUTH, url=server.url + "/identities", params={"limit": 1000}).json()["total"] == 25
