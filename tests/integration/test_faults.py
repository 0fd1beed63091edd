"""Faults (issue 12): the database goes away under load and comes back; the disk is read-only.

The PostgreSQL test stops and starts the real cluster (as .ci/run starts it), and always starts
it again, whatever happens in between.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url

from tests.conftest import _postgres_admin_url, orl
from tests.integration.server import AUTH, Server
from tests.service.api.conftest import assert_consistent, files, make_client

pytestmark = pytest.mark.slow


def cluster(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action], check=True, timeout=120)


@contextmanager
def postgres_stopped() -> Iterator[None]:
    cluster("stop")
    try:
        yield
    finally:
        cluster("start")


def enroll(url: str, name: str, person: int, photo: int) -> httpx.Response:
    files = [("images", ("p.pgm", orl(person, photo), "image/x-portable-graymap"))]
    return httpx.post(
        url + "/enroll", headers=AUTH, data={"name": name, "allow_conflict": "true"}, files=files, timeout=30
    )


class Load:
    """Enrolls and identifies in a loop on another thread, keeping every answer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[tuple[str, int, dict, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            start = time.monotonic()
            try:
                if n % 2:
                    r = enroll(self.url, f"load-{n}", 1 + n % 10, 1 + n % 10)
                    kind = "enroll"
                else:
                    files = {"image": ("p.pgm", orl(1 + n % 10, 2), "image/x-portable-graymap")}
                    r = httpx.post(self.url + "/identify", headers=AUTH, files=files, timeout=30)
                    kind = "identify"
                body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
                self.answers.append((kind, r.status_code, body | {"retry_after": r.headers.get("retry-after")}, 0.0))
            except httpx.HTTPError as exc:
                self.answers.append(("error", 0, {"error": repr(exc)}, 0.0))
            self.answers[-1] = (*self.answers[-1][:3], time.monotonic() - start)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


@pytest.mark.postgres
@pytest.mark.skipif(shutil.which("pg_ctlcluster") is None, reason="needs pg_ctlcluster (Debian's PostgreSQL)")
def test_postgres_stopped_under_load_is_503_and_recovers_without_restart(tmp_path: Path) -> None:
    with own_database() as postgres_url:
        stopped_under_load(postgres_url, tmp_path)


@contextmanager
def own_database() -> Iterator[str]:
    """A fresh database, made and dropped through connections that survive the restart (the
    suite's postgres_url fixture keeps one open across it)."""
    admin_url = _postgres_admin_url()
    name = f"faceid_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def stopped_under_load(postgres_url: str, tmp_path: Path) -> None:
    with Server(postgres_url, tmp_path / "server.log", FACEID_RATE_LIMIT_PER_MINUTE="0") as server:
        assert enroll(server.url, "s1", 1, 1).status_code == 201
        with Load(server.url) as load:
            time.sleep(2)
            with postgres_stopped():
                time.sleep(2)
                start = time.monotonic()
                r = httpx.get(server.url + "/identities", headers=AUTH, timeout=30)
                assert time.monotonic() - start < 15, "a request hung on the stopped database"
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"] == "database_unavailable"
                assert int(r.headers["retry-after"]) >= 1
                ready = httpx.get(server.url + "/ready", timeout=30)
                assert ready.status_code == 503
                assert ready.json()["database"] == "unreachable"
                time.sleep(3)
            # Back without a restart of the service.
            deadline = time.monotonic() + 60
            while httpx.get(server.url + "/ready", timeout=30).status_code != 200:
                assert time.monotonic() < deadline, "the service did not recover once the database was back"
                time.sleep(0.5)
            time.sleep(2)
        statuses = [(kind, status) for kind, status, _, _ in load.answers]
        assert ("enroll", 201) in statuses and ("enroll", 503) in statuses, statuses
        odd = [a for a in load.answers if a[1] not in (200, 201, 503)]
        assert not odd, odd  # never a 500, never a dropped connection
        assert all(a[2]["retry_after"] for a in load.answers if a[1] == 503)
        assert max(a[3] for a in load.answers) < 30
        # No write that got a 2xx is lost, and the gallery matches the database.
        for kind, status, body, _ in load.answers:
            if kind == "enroll" and status == 201:
                r = httpx.get(f"{server.url}/identities/{body['identity']['id']}", headers=AUTH, timeout=30)
                assert r.status_code == 200 and r.json()["faces"] == 1, r.text
        ready = httpx.get(server.url + "/ready", timeout=30).json()
        assert ready["in_sync"] and ready["gallery_size"] == ready["searchable_faces_in_db"], ready


def sqlite_connections(client: TestClient, pragma: str) -> None:
    """Every connection the service opens from now on runs `pragma` first (the pool is emptied)."""
    engine = client.app.state.components.collections.store.engine  # type: ignore[attr-defined]

    @event.listens_for(engine, "connect")
    def _limit(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(pragma)

    engine.dispose()


def test_sqlite_read_only_is_503_and_nothing_half_written(tmp_path: Path) -> None:
    # Root (CI, this machine) writes through any file mode, so SQLite's own read-only switch stands
    # in for a read-only file: the error (SQLITE_READONLY) is the same.
    with make_client(f"sqlite:///{tmp_path / 'faceid.db'}") as client:
        assert client.post("/enroll", data={"name": "s1"}, files=files("images", orl(1, 1))).status_code == 201
        before = assert_consistent(client)
        sqlite_connections(client, "PRAGMA query_only=ON")
        r = client.post("/enroll", data={"name": "s2"}, files=files("images", orl(2, 1)))
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "database_unavailable" and r.headers["retry-after"]
        assert client.delete("/identities/1").status_code == 503
        assert client.get("/identities/1").status_code == 200  # reads still work
        sqlite_connections(client, "PRAGMA query_only=OFF")
        after = assert_consistent(client)
        assert after["gallery_fingerprint"] == before["gallery_fingerprint"]
        assert client.post("/enroll", data={"name": "s2"}, files=files("images", orl(2, 1))).status_code == 201


def test_sqlite_disk_full_is_507_and_nothing_half_written(tmp_path: Path) -> None:
    # max_page_count caps the file where it stands: SQLite then fails writes with SQLITE_FULL,
    # the error a full disk gives.
    with make_client(f"sqlite:///{tmp_path / 'faceid.db'}") as client:
        assert client.post("/enroll", data={"name": "s1"}, files=files("images", orl(1, 1))).status_code == 201
        store = client.app.state.components.collections.store  # type: ignore[attr-defined]
        with store.engine.connect() as conn:
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
        sqlite_connections(client, f"PRAGMA max_page_count={pages}")
        answers = []
        for n in range(2, 12):
            r = client.post("/enroll", data={"name": f"s{n}"}, files=files("images", *[orl(n, k) for k in range(1, 6)]))
            answers.append(r.status_code)
            assert r.status_code in (201, 507), r.text
            if r.status_code == 507:
                assert r.json()["error"]["code"] == "insufficient_storage"
        assert 507 in answers, answers
        assert_consistent(client)  # every 201 is in the database and the gallery, nothing else is
