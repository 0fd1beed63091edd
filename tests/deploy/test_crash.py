"""kill -9 while enrolls are in flight: after a restart every acknowledged enroll is
there, whole, and the gallery agrees with the database."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.conftest import orl
from tests.integration.server import AUTH, Server

CLIENTS = 4


def test_acknowledged_enrolls_survive_kill_9(db_url: str, tmp_path: Path) -> None:
    server = Server(db_url, tmp_path / "server.log")
    acknowledged: list[tuple[int, str, int]] = []  # (identity id, name, faces accepted)
    failed: list[str] = []
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
            except httpx.HTTPError as exc:  # the server died under this request
                failed.append(type(exc).__name__)
                continue
            if r.status_code == 201:
                acknowledged.append((r.json()["identity"]["id"], name, len(r.json()["accepted"])))

    server.start()
    with ThreadPoolExecutor(CLIENTS) as pool:
        for worker in range(CLIENTS):
            pool.submit(client, worker)
        deadline = time.monotonic() + 30
        while len(acknowledged) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.stop(signal.SIGKILL)  # requests are in flight: four clients never wait
        time.sleep(0.3)
        stop.set()
    assert len(acknowledged) >= 8, "too few enrolls before the kill to mean anything"
    assert failed, "no request was cut off by the kill"

    with server:  # same database, new process
        ready = httpx.get(headers=AUTH, url=server.url + "/ready").json()
        assert ready["ready"] and ready["in_sync"]
        assert ready["gallery_size"] == ready["searchable_faces_in_db"] >= 3 * len(acknowledged)
        for identity, name, faces in acknowledged:
            r = httpx.get(headers=AUTH, url=f"{server.url}/identities/{identity}")
            assert r.status_code == 200, (identity, name)
            assert r.json()["name"] == name and r.json()["faces"] == faces
        total = httpx.get(headers=AUTH, url=server.url + "/identities", params={"limit": 1}).json()["total"]
        # Enrolls cut off by the kill are either wholly there or wholly absent.
        assert total >= len(acknowledged)
        for item in httpx.get(headers=AUTH, url=server.url + "/identities", params={"limit": 1000}).json()["items"]:
            assert item["faces"] == 3, item
