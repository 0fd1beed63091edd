"""SIGTERM while enrolls are in flight (issue 12): the server stops taking requests and finishes or
refuses each one in flight; a client never gets a 201 for a face that is not in the database after
the restart (tests/deploy/test_crash.py does the same with kill -9)."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import orl
from tests.integration.server import AUTH, Server

pytestmark = pytest.mark.slow
CLIENTS = 4


def test_sigterm_mid_enroll_acknowledges_only_what_is_stored(db_url: str, tmp_path: Path) -> None:
    server = Server(db_url, tmp_path / "server.log", FACEID_RATE_LIMIT_PER_MINUTE="0")
    acknowledged: list[tuple[int, str, list[int]]] = []  # (identity id, name, face ids)
    answered: list[int] = []
    odd: list[str] = []
    cut_off: list[str] = []
    stop = threading.Event()

    def client(worker: int) -> None:
        n = 0
        while not stop.is_set():
            person, name = 1 + (worker * 7 + n) % 20, f"w{worker}-{n}"
            n += 1
            try:
                r = httpx.post(
                    headers=AUTH,
                    url=server.url + "/enroll",
                    data={"name": name, "allow_conflict": "true"},  # the same people come round again
                    files=[("images", (f"{i}.pgm", orl(person, i), "image/x-portable-graymap")) for i in (1, 2, 3)],
                    timeout=30,
                )
            except httpx.HTTPError as exc:  # refused: the server had stopped listening
                cut_off.append(type(exc).__name__)
                time.sleep(0.05)
                continue
            answered.append(r.status_code)
            if r.status_code not in (201, 503):
                odd.append(r.text)
            if r.status_code == 201:
                body = r.json()
                acknowledged.append((body["identity"]["id"], name, [a["face_id"] for a in body["accepted"]]))

    server.start()
    with ThreadPoolExecutor(CLIENTS) as pool:
        for worker in range(CLIENTS):
            pool.submit(client, worker)
        deadline = time.monotonic() + 30
        while len(acknowledged) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        before = len(answered)
        server.stop(signal.SIGTERM)  # graceful: in-flight requests finish, new ones are refused
        time.sleep(0.5)
        stop.set()
    assert len(acknowledged) >= 8, "too few enrolls before the signal to mean anything"
    assert len(answered) >= before, "in-flight requests were dropped instead of finished"
    assert not odd, odd  # finished, or refused in the documented way

    with server:  # same database, new process
        ready = httpx.get(headers=AUTH, url=server.url + "/ready").json()
        assert ready["ready"] and ready["in_sync"], ready
        for identity, name, faces in acknowledged:
            r = httpx.get(headers=AUTH, url=f"{server.url}/identities/{identity}/faces")
            assert r.status_code == 200, (identity, name)
            assert sorted(f["id"] for f in r.json()["items"]) == sorted(faces), (identity, name)
        for item in httpx.get(headers=AUTH, url=server.url + "/identities", params={"limit": 1000}).json()["items"]:
            assert item["faces"] == 3, item  # nothing half-written
