"""Regression tests for the integrity review (issue 13): ids, the change log, migrations."""

from __future__ import annotations

import multiprocessing
import threading
from datetime import UTC
from pathlib import Path

import numpy as np
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import select, text

from service.errors import NotFound
from service.store import CollectionStore, NewFace, Store
from service.store.migrate import alembic_config, upgrade
from service.store.tables import FaceEventRow, FaceRow

MODEL = "m@1"


@pytest.fixture
def store(db_url: str) -> Store:
    store = Store.from_url(db_url)
    upgrade(store.engine)
    return store


def people(store: Store) -> CollectionStore:
    """The identity operations of the `default` collection."""
    return store.collection(store.ensure_collection("default", "m@1").id)


def face(seed: int) -> NewFace:
    v = np.random.default_rng(seed).standard_normal(16).astype(np.float32)
    return NewFace(embedding=v / np.linalg.norm(v), model=MODEL, box=(1, 2, 30, 40), score=0.9, image_sha256="ab" * 32)


def test_ids_are_never_reused(store: Store) -> None:
    """Enroll Alice, enroll Bob, delete Bob, enroll Carol: Carol must not get Bob's ids."""
    alice, _ = people(store).create_identity("Alice", None, [face(1)])
    bob, bob_faces = people(store).create_identity("Bob", None, [face(2)])
    people(store).delete_identity(bob.id)
    carol, carol_faces = people(store).create_identity("Carol", None, [face(3)])
    assert carol.id > bob.id > alice.id
    assert carol_faces[0].id > bob_faces[0].id
    # A client still holding Bob's id gets 404, never Carol.
    with pytest.raises(NotFound):
        people(store).get_identity(bob.id)
    with pytest.raises(NotFound):
        people(store).add_faces(bob.id, [face(4)])
    # The same for a deleted face.
    extra = people(store).add_faces(carol.id, [face(5)])[1][0]
    people(store).delete_face(carol.id, extra.id)
    assert people(store).add_faces(carol.id, [face(6)])[1][0].id > extra.id


def _rows_at_0001(store: Store) -> tuple[int, int, int]:
    """Today's data at revision 0001: two people, the newest deleted.
    Returns (the survivor's id, the deleted identity's id, the deleted face's id)."""
    now = "2026-11-20 10:00:00"
    ids = []
    with store.engine.begin() as conn:
        for n in (1, 2):
            ident = conn.execute(
                text("INSERT INTO identities (name, created_at, updated_at) VALUES (:n, :t, :t) RETURNING id"),
                {"n": f"p{n}", "t": now},
            ).scalar_one()
            face_id = conn.execute(
                text(
                    "INSERT INTO faces (identity_id, embedding, dim, model, box_x1, box_y1, box_x2, box_y2,"
                    " detector_score, image_sha256, created_at, updated_at)"
                    " VALUES (:i, :e, 16, :m, 0, 0, 1, 1, 0.9, :h, :t, :t) RETURNING id"
                ),
                {"i": ident, "e": face(n).embedding.tobytes(), "m": MODEL, "h": "0" * 64, "t": now},
            ).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO face_events (op, face_id, identity_id, model, created_at)"
                    " VALUES ('add', :f, :i, :m, :t)"
                ),
                {"f": face_id, "i": ident, "m": MODEL, "t": now},
            )
            ids.append((ident, face_id))
        (gone, gone_face) = ids[1]
        conn.execute(text("DELETE FROM faces WHERE id = :f"), {"f": gone_face})
        conn.execute(text("DELETE FROM identities WHERE id = :i"), {"i": gone})
        conn.execute(
            text(
                "INSERT INTO face_events (op, face_id, identity_id, model, created_at)"
                " VALUES ('remove', :f, :i, :m, :t)"
            ),
            {"f": gone_face, "i": gone, "m": MODEL, "t": now},
        )
    return ids[0][0], gone, gone_face


def test_migration_keeps_the_data_and_never_reuses_ids_deleted_before_it(db_url: str) -> None:
    store = Store.from_url(db_url)
    upgrade(store.engine, "0001")
    survivor_id, deleted_identity, deleted_face = _rows_at_0001(store)
    upgrade(store.engine)
    # Nothing was lost (rebuilding `identities` must not cascade into `faces`).
    # Everyone is in `default`, pinned to the model of their faces (migration 0003).
    assert [(c.name, c.model) for c in store.list_collections()] == [("default", MODEL)]
    survivor = people(store).get_identity(survivor_id)
    assert survivor.faces == 1 and survivor.created_at.tzinfo is not None
    ((ids, owners, _, vectors),) = list(store.iter_embeddings(MODEL))
    assert len(ids) == 1 and owners.tolist() == [survivor_id]
    np.testing.assert_array_equal(vectors[0], face(1).embedding)
    new, faces = people(store).create_identity("after", None, [face(9)])
    assert new.id > deleted_identity and faces[0].id > deleted_face
    assert store.changes_since(0)[-1].seq == 4  # the log's own sequence went on too


def test_timestamps_come_back_in_utc_with_an_offset(store: Store) -> None:
    identity, _ = people(store).create_identity("Ada", None, [face(1)])
    for read in (people(store).get_identity(identity.id), people(store).list_identities(limit=5, offset=0)[0][0]):
        assert read.created_at.tzinfo is not None and read.created_at.utcoffset() == UTC.utcoffset(None)
        assert read.updated_at.tzinfo is not None
    assert people(store).list_faces(identity.id)[0].created_at.tzinfo is not None


def test_add_faces_racing_a_delete_is_404_or_whole_and_every_removal_is_logged(store: Store) -> None:
    """The review's store-level race: add_faces and delete_identity of one identity at once."""
    outcomes: dict[str, int] = {}
    for n in range(60):
        identity, _ = people(store).create_identity(f"p{n}", None, [face(n)])
        barrier = threading.Barrier(2)

        def add(identity_id: int = identity.id, seed: int = n, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                people(store).add_faces(identity_id, [face(1000 + seed), face(2000 + seed)])
                outcomes["added"] = outcomes.get("added", 0) + 1
            except NotFound:
                outcomes["not_found"] = outcomes.get("not_found", 0) + 1

        def remove(identity_id: int = identity.id, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            people(store).delete_identity(identity_id)

        threads = [threading.Thread(target=add), threading.Thread(target=remove)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sum(outcomes.values()) == 60  # no other error (an IntegrityError was a 500)
    with store.engine.connect() as conn:
        adds = set(conn.scalars(select(FaceEventRow.face_id).where(FaceEventRow.op == "add")))
        removes = set(conn.scalars(select(FaceEventRow.face_id).where(FaceEventRow.op == "remove")))
        live = set(conn.scalars(select(FaceRow.id)))
    assert live == set(), "every identity was deleted, so no face may be left"
    assert adds == removes, "a face left without a remove entry in the change log"


def _migrate(url: str, start: multiprocessing.synchronize.Event, errors: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        store = Store.from_url(url)
        start.wait()
        upgrade(store.engine)
        store.close()
    except Exception as exc:  # reported to the parent
        errors.put(f"{type(exc).__name__}: {exc}")


def test_several_processes_migrating_a_fresh_sqlite_file_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    ctx = multiprocessing.get_context("spawn")
    start, errors = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_migrate, args=(url, start, errors)) for _ in range(4)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert not found and all(p.exitcode == 0 for p in procs), found
    store = Store.from_url(url)
    with store.engine.connect() as conn:
        head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
        assert conn.scalar(text("SELECT version_num FROM alembic_version")) == head


def test_audit_entries_past_their_retention_are_pruned(store: Store) -> None:
    from datetime import timedelta

    from service.store.audit import AuditEntry, AuditLog, AuditQuery
    from service.store.tables import AuditRow, utcnow

    audit = AuditLog(store)
    audit.append(AuditEntry("enroll", collection="default", identity_id=1, face_ids=(1, 2)))
    audit.append(AuditEntry("delete_identity", collection="default", identity_id=1, face_ids=(1, 2)))
    with store.engine.begin() as conn:
        conn.execute(
            AuditRow.__table__.update().where(AuditRow.action == "enroll").values(at=utcnow() - timedelta(days=400))
        )
    assert audit.prune(365) == 1
    entries, total = audit.query(AuditQuery(identity_id=1), limit=10, offset=0)
    assert total == 1 and entries[0].action == "delete_identity" and entries[0].face_ids == (1, 2)
