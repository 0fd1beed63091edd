"""A minute of concurrent enroll / add / delete / identify from many clients against processes
that share one database: two uvicorn workers on a fresh SQLite file, and two servers on
PostgreSQL. Afterwards no face is under an identity it was not sent to, no id was handed out
twice, and every process's gallery equals the database (issue 13)."""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import orl
from tests.integration.server import AUTH, Server

SECONDS = float(os.environ.get("FACEID_TEST_CONCURRENCY_SECONDS", "60"))
CLIENTS = 6
PHOTOS = [(p, i) for p in range(1, 11) for i in range(1, 11)]


class Ledger:
    """What the clients were told: every id handed out, and the photos sent to each identity."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.identity_ids: list[int] = []
        self.face_ids: list[int] = []
        self.sent: dict[int, set[str]] = defaultdict(set)
        self.live: set[int] = set()
        self.counts: dict[str, int] = defaultdict(int)

    def record(self, body: dict, photos: list[bytes], new: bool) -> None:
        identity = body["identity"]["id"]
        with self.lock:
            if new:
                self.identity_ids.append(identity)
            self.live.add(identity)
            self.face_ids.extend(a["face_id"] for a in body["accepted"])
            self.sent[identity].update(hashlib.sha256(p).hexdigest() for p in photos)


def multipart(field: str, photos: list[bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(field, (f"{i}.pgm", p, "image/x-portable-graymap")) for i, p in enumerate(photos)]


def client_loop(urls: list[str], ledger: Ledger, seed: int, deadline: float) -> list[str]:
    rng = random.Random(seed)
    errors: list[str] = []
    with httpx.Client(timeout=60, headers=AUTH) as http:
        while time.monotonic() < deadline:
            url = rng.choice(urls)
            with ledger.lock:
                live = sorted(ledger.live)
            op = rng.choices(["enroll", "add", "delete_face", "delete", "identify"], [3, 3, 2, 1, 3])[0]
            if not live and op != "identify":
                op = "enroll"
            photos = [orl(*p) for p in rng.sample(PHOTOS, rng.randint(1, 2))]
            if op == "enroll":
                r = http.post(
                    url + "/enroll",
                    data={"name": f"c{seed}", "allow_conflict": "true"},
                    files=multipart("images", photos),
                )
                if r.status_code == 201:
                    ledger.record(r.json(), photos, new=True)
            elif op == "add":
                target = rng.choice(live)
                # Recorded before the request: a face may be stored even when its answer is lost.
                with ledger.lock:
                    ledger.sent[target].update(hashlib.sha256(p).hexdigest() for p in photos)
                r = http.post(
                    f"{url}/identities/{target}/faces",
                    data={"allow_conflict": "true"},
                    files=multipart("images", photos),
                )
                if r.status_code == 201:
                    ledger.record(r.json(), photos, new=False)
            elif op == "delete_face":
                target = rng.choice(live)
                faces = http.get(f"{url}/identities/{target}/faces")
                r = faces
                if faces.status_code == 200 and faces.json()["items"]:
                    newest = faces.json()["items"][-1]["id"]
                    r = http.delete(f"{url}/identities/{target}/faces/{newest}")
            elif op == "delete":
                target = rng.choice(live)
                r = http.delete(f"{url}/identities/{target}")
                if r.status_code == 204:
                    with ledger.lock:
                        ledger.live.discard(target)
            else:
                r = http.post(url + "/identify", files=multipart("image", photos[:1]))
            with ledger.lock:
                ledger.counts[f"{op} {r.status_code}"] += 1
            # 404: the identity or face went meanwhile (another client); 422: no face in a photo.
            if r.status_code >= 500 or r.status_code not in (200, 201, 204, 404, 422):
                errors.append(f"{op} {r.status_code} {r.text[:200]}")
    return errors


def processes(urls: list[str], want: int) -> dict[str, dict]:
    """/ready from every process behind the URLs (workers share a port: ask until each answered)."""
    seen: dict[str, dict] = {}
    for _ in range(100):
        for url in urls:
            body = httpx.get(headers=AUTH, url=url + "/ready", timeout=30).json()
            seen[body["process"]] = body
        if len(seen) >= want:
            break
    return seen


@pytest.fixture(params=["sqlite-two-workers", "postgresql-two-servers"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[list[str], str, int]]:
    with ExitStack() as stack:
        if request.param.startswith("sqlite"):
            url = f"sqlite:///{tmp_path / 'fresh.db'}"  # fresh: both workers start on an empty file
            server = stack.enter_context(Server(url, tmp_path / "server.log", FACEID_WORKERS="2"))
            yield [server.url], url, 2
        else:
            url = request.getfixturevalue("postgres_url")
            servers = [stack.enter_context(Server(url, tmp_path / f"server{i}.log")) for i in range(2)]
            yield [s.url for s in servers], url, 2


@pytest.mark.slow
def test_a_minute_of_concurrent_writers_keeps_ids_faces_and_galleries_true(
    cluster: tuple[list[str], str, int],
) -> None:
    urls, database_url, process_count = cluster
    ledger = Ledger()
    deadline = time.monotonic() + SECONDS
    results: list[list[str]] = [[] for _ in range(CLIENTS)]
    threads = [
        threading.Thread(target=lambda n=n: results[n].extend(client_loop(urls, ledger, n, deadline)))
        for n in range(CLIENTS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [e for r in results for e in r]
    assert not errors, errors[:5]
    counts = dict(ledger.counts)
    assert counts.get("enroll 201", 0) >= 10 and counts.get("delete 204", 0) >= 3, counts
    assert counts.get("add 201", 0) >= 5 and counts.get("identify 200", 0) >= 10, counts

    # No id was ever handed out twice.
    assert len(ledger.identity_ids) == len(set(ledger.identity_ids))
    assert len(ledger.face_ids) == len(set(ledger.face_ids))

    # No face is under an identity it was not sent to.
    engine = create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT identity_id, image_sha256 FROM faces")).all()
        db = conn.execute(text("SELECT count(*), coalesce(sum(id), 0), coalesce(sum(identity_id), 0) FROM faces")).one()
    engine.dispose()
    misfiled = [(i, h[:12]) for i, h in rows if h not in ledger.sent.get(i, set())]
    assert not misfiled, misfiled[:5]

    # Every process's gallery equals the database, and none had to repair drift to get there.
    time.sleep(2)  # the last writes reach the other processes through the change log
    ready = processes(urls, process_count)
    assert len(ready) == process_count, list(ready)
    for name, body in ready.items():
        assert body["in_sync"] and body["drift_repairs"] == 0, (name, body)
        assert body["gallery_fingerprint"] == [int(v) for v in db], (name, body["gallery_fingerprint"], db)
