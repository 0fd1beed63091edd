"""Several service processes, one database: every replica sees every other's writes
within the bound, and one that starts or loses its connections catches up."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import orl
from tests.integration.server import AUTH, Server
from tests.integration.test_server import enroll, identify

BOUND = 1.0  # seconds from a write's response on one replica to the other answering with it


def best(base: str, image: bytes) -> str | None:
    face = identify(base, image)["faces"][0]
    return face["identity"]["name"] if face["decision"] == "match" else None


def within(seconds: float, condition: Callable[[], bool]) -> float:
    """Seconds until `condition` held; fails past `seconds` (the last try starts before the deadline)."""
    start = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - start
        if time.monotonic() - start > seconds:
            pytest.fail(f"not within {seconds} s")
        time.sleep(0.02)


@pytest.fixture
def replicas(postgres_url: str, tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    # Polling is all but off (60 s): the bound has to be met by LISTEN/NOTIFY.
    a, b = (Server(postgres_url, tmp_path / f"{n}.log", FACEID_SYNC_INTERVAL="60") for n in "ab")
    a.start()  # migrates the fresh database first, so B does not wait on A's migration lock
    try:
        b.start()
        yield a, b
    finally:
        b.stop()
        a.stop()


def test_writes_on_one_replica_are_seen_by_the_other_within_the_bound(
    replicas: tuple[Server, Server], postgres_url: str
) -> None:
    a, b = replicas
    assert best(b.url, orl(5, 7)) is None

    created = enroll(a.url, "s5", orl(5, 1), orl(5, 2))
    assert created.status_code == 201
    seen = within(BOUND, lambda: best(b.url, orl(5, 7)) == "s5")

    identity = created.json()["identity"]["id"]
    assert httpx.delete(headers=AUTH, url=f"{b.url}/identities/{identity}").status_code == 204
    gone = within(BOUND, lambda: best(a.url, orl(5, 7)) is None)
    print(f"enroll on A seen by B after {seen:.3f} s; delete on B seen by A after {gone:.3f} s")

    # B is stopped, A writes, B starts again: it comes back from the database.
    b.stop()
    assert enroll(a.url, "s9", orl(9, 1)).status_code == 201
    b.start()
    assert best(b.url, orl(9, 4)) == "s9"

    # Every connection of both replicas is killed (a database restart or failover): they
    # reconnect, the listener catches up from the change log, and notifications flow again.
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        killed = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar()
    admin.dispose()
    assert killed and killed >= 2  # at least both listeners
    time.sleep(1.5)  # the listeners' reconnect back-off
    assert enroll(b.url, "s11", orl(11, 1)).status_code == 201
    within(BOUND, lambda: best(a.url, orl(11, 5)) == "s11")

    # Both write at once: each ends up with all of it.
    people = [p for p in range(1, 21) if p not in (5, 9, 11)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        codes = list(pool.map(lambda p: enroll((a, b)[p % 2].url, f"s{p}", orl(p, 1)).status_code, people))
    assert codes == [201] * len(people)
    within(BOUND, lambda: best(a.url, orl(13, 6)) == "s13" and best(b.url, orl(12, 6)) == "s12")
    for server in (a, b):
        ready = httpx.get(headers=AUTH, url=server.url + "/ready").json()
        assert ready["in_sync"] and ready["gallery_size"] == ready["searchable_faces_in_db"] == 2 + len(people)
