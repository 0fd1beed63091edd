"""LISTEN/NOTIFY on a real PostgreSQL: a commit wakes the listener, a rollback does not,
and a listener whose connection is killed reconnects and catches up."""

from __future__ import annotations

import threading
import time

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from service.store import NewFace, Store
from service.store.migrate import upgrade
from service.store.notify import CHANNEL, ChangeListener
from service.store.tables import FaceEventRow


class Calls:
    def __init__(self) -> None:
        self.count = 0
        self._changed = threading.Condition()

    def __call__(self) -> None:
        with self._changed:
            self.count += 1
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.count >= count, timeout)


def face() -> NewFace:
    vector = np.zeros(128, np.float32)
    vector[0] = 1
    return NewFace(embedding=vector, model="m@1", box=(0, 0, 10, 10), score=0.9, image_sha256="0" * 64)


def listener_pid(store: Store) -> int | None:
    with store.engine.connect() as conn:
        return conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = :q"),
            {"q": f"LISTEN {CHANNEL}"},
        ).scalar()


def test_commit_notifies_rollback_does_not_and_a_killed_listener_catches_up(postgres_url: str) -> None:
    store = Store.from_url(postgres_url)
    upgrade(store.engine)
    people = store.collection(store.ensure_collection("default", "m@1").id)
    calls = Calls()
    listener = ChangeListener.for_store(store, calls)
    assert listener is not None
    try:
        assert listener.connected.wait(5)
        assert calls.wait_for(1, 2), "no catch-up call after connecting"

        people.create_identity("a", None, [face(), face(), face()])
        assert calls.wait_for(2, 1), "a committed write did not wake the listener"
        time.sleep(0.3)
        assert calls.count == 2, "three change-log rows in one transaction should arrive as one notification"

        with Session(store.engine) as session:
            session.add(FaceEventRow(op="add", face_id=1, identity_id=1, collection_id=1, model="m@1"))
            session.flush()
            session.rollback()
        time.sleep(0.5)
        assert calls.count == 2, "a rolled-back write notified"

        pid = listener_pid(store)
        assert pid is not None
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
        assert calls.wait_for(3, 10), "the listener did not reconnect and catch up"
        assert listener.connected.wait(5)
        people.create_identity("b", None, [face()])
        assert calls.wait_for(4, 1), "a write after the reconnect did not wake the listener"
    finally:
        listener.stop()
        store.close()


def test_not_started_for_sqlite(tmp_path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'faceid.db'}")
    assert ChangeListener.for_store(store, lambda: None) is None
    store.close()
