"""The gallery follows the database: the change log in order, rebuilds that never leave a
half-filled gallery, drift found and repaired (issue 13)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.exc import OperationalError

from service.app import build_collections
from service.collections import DEFAULT, Collections
from service.settings import Settings
from service.store import NewFace
from service.store.tables import FaceEventRow
from tests.conftest import orl


def build(url: str) -> Collections:
    return build_collections(Settings(database_url=url, sync_interval=0, providers=["CPUExecutionProvider"]))


@pytest.fixture
def recognizer(db_url: str) -> Iterator[Collections]:
    """One process's collections (named for what the tests exercise: its galleries following the log)."""
    r = build(db_url)
    yield r
    r.store.close()


def other_process(recognizer: Collections) -> Collections:
    """A second process on the same database (its own galleries)."""
    return build(recognizer.store.engine.url.render_as_string(hide_password=False))


def default_id(recognizer: Collections) -> int:
    return recognizer.state(DEFAULT).record.id


def new_face(recognizer: Collections, seed: int) -> NewFace:
    v = np.random.default_rng(seed).standard_normal(recognizer.analyzer.embedder.manifest.embedding_size)
    v = v.astype(np.float32)
    return NewFace(v / np.linalg.norm(v), recognizer.model_id, (0, 0, 10, 10), 0.9, "0" * 64)


def db_fingerprint(recognizer: Collections) -> tuple[int, int, int]:
    _, per_collection = recognizer.store.fingerprints(recognizer.model_id)
    fps = list(per_collection.values())
    return sum(f.faces for f in fps), sum(f.face_id_sum for f in fps), sum(f.identity_id_sum for f in fps)


def test_the_log_is_applied_in_order(recognizer: Collections) -> None:
    """A batch [remove f, add f] must end with f in the gallery (it was applied adds-first)."""
    identity, (record,) = recognizer.store.create_identity(
        default_id(recognizer), "Carol", None, [new_face(recognizer, 1)]
    )
    recognizer.sync()
    with recognizer.store._sessions() as session:  # the log as a replayed remove/re-add leaves it
        for op in ("remove", "add"):
            session.add(
                FaceEventRow(
                    op=op,
                    face_id=record.id,
                    identity_id=identity.id,
                    collection_id=default_id(recognizer),
                    model=recognizer.model_id,
                )
            )
        session.commit()
    recognizer.sync()
    assert recognizer.fingerprint() == db_fingerprint(recognizer)


def test_another_process_follows_quick_delete_and_add_cycles(recognizer: Collections) -> None:
    """The review's repro: enroll Carol, then cycles of "delete her newest face, add a photo",
    followed by another process that syncs once at the end."""
    follower = other_process(recognizer)
    writer = recognizer.recognizer(DEFAULT)
    carol = writer.enroll("Carol", [orl(3, 1), orl(3, 2)]).identity
    for photo in range(3, 9):
        newest = max(f.id for f in writer.store.list_faces(carol.id))
        writer.delete_face(carol.id, newest)
        writer.add_faces(carol.id, [orl(3, photo)])
    follower.sync()
    assert follower.fingerprint() == db_fingerprint(follower) == recognizer.fingerprint()
    result = follower.recognizer(DEFAULT).identify(orl(3, 10))
    assert result.faces[0].decision == "match" and result.faces[0].identity is not None
    assert result.faces[0].identity.id == carol.id and result.gallery_size == 2
    follower.store.close()


def test_a_database_error_during_sync_loses_nothing(recognizer: Collections, monkeypatch: pytest.MonkeyPatch) -> None:
    """The review's fault_sync: one transient error must not empty the gallery for good."""
    for n in range(3):
        recognizer.store.create_identity(default_id(recognizer), f"p{n}", None, [new_face(recognizer, n)])
    recognizer.sync()
    before = recognizer.fingerprint()
    follower = other_process(recognizer)
    recognizer.store.create_identity(default_id(recognizer), "late", None, [new_face(recognizer, 10)])

    def down(*args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT", {}, Exception("connection reset"))

    monkeypatch.setattr(follower.store, "changes_since", down)
    monkeypatch.setattr(follower.store, "iter_embeddings", down)
    with pytest.raises(OperationalError):
        follower.sync()
    with pytest.raises(OperationalError):
        follower.rebuild()
    assert follower.fingerprint() == before  # still whole: never cleared, never half-loaded
    assert follower.recognizer(DEFAULT).decision(None, follower.size).threshold >= 0.4
    monkeypatch.undo()
    follower.sync()  # the database is back
    assert follower.fingerprint() == db_fingerprint(follower)
    follower.store.close()


def test_drift_is_found_and_the_gallery_rebuilt(recognizer: Collections) -> None:
    _, records = recognizer.store.create_identity(
        default_id(recognizer), "P", None, [new_face(recognizer, 1), new_face(recognizer, 2)]
    )
    recognizer.sync()
    recognizer.state(DEFAULT).gallery.remove(np.array([records[0].id]))  # lost behind the log's back
    assert recognizer.fingerprint() != db_fingerprint(recognizer)
    status = recognizer.check()
    assert status.in_sync and status.size == status.searchable_in_db == 2
    assert recognizer.fingerprint() == db_fingerprint(recognizer)


def test_a_face_under_the_wrong_identity_is_drift(recognizer: Collections) -> None:
    a, (fa,) = recognizer.store.create_identity(default_id(recognizer), "A", None, [new_face(recognizer, 1)])
    b, _ = recognizer.store.create_identity(default_id(recognizer), "B", None, [new_face(recognizer, 2)])
    recognizer.sync()
    vector = recognizer.store.identity_embeddings(default_id(recognizer), a.id, recognizer.model_id)
    gallery = recognizer.state(DEFAULT).gallery
    gallery.remove(np.array([fa.id]))
    gallery.add(np.array([fa.id]), np.array([b.id]), vector)
    assert recognizer.size == 2
    assert recognizer.check().in_sync
    assert recognizer.state(DEFAULT).gallery.search(vector, 1)[0][0].identity_id == a.id


def test_verify_against_an_identity_accounts_for_its_number_of_faces(tmp_path: Path) -> None:
    collections = build(f"sqlite:///{tmp_path / 'v.db'}")
    r = collections.recognizer(DEFAULT)
    one = r.enroll("one", [orl(4, 1)]).identity
    many = r.enroll("many", [orl(5, i) for i in range(1, 9)]).identity
    pair = collections.state(DEFAULT).threshold.pair_threshold()
    assert r.verify(orl(4, 2), identity_id=one.id).threshold == pytest.approx(pair)
    raised = r.verify(orl(5, 9), identity_id=many.id)
    assert raised.threshold > pair and raised.decision == "match"
    collections.store.close()


def test_a_collection_keeps_at_most_its_calibration_pairs(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's cap on self-calibration pairs reaches every collection's calibration (a soak
    found the library's 10x larger default in use: seconds-long stalls and growing memory)."""
    monkeypatch.setattr("service.collections.CALIBRATION_PAIRS", 50)
    r = build(db_url)
    try:
        for seed in range(30):  # 30 identities of one face each: 435 between-identity pairs
            r.store.create_identity(default_id(r), f"p{seed}", None, [new_face(r, seed)])
        r.sync()
        calibration = r.state(DEFAULT).calibration
        assert calibration is not None and 0 < calibration.pairs_kept <= 50
    finally:
        r.store.close()


def test_a_conflict_enrolled_anyway_leaves_the_pair_out_of_every_replicas_calibration(recognizer: Collections) -> None:
    """allow_conflict=true stores the flagged pair with the faces; a second process, following the
    log, leaves that pair of identities out of its self-calibration, and forgets it with them."""
    follower = other_process(recognizer)
    try:
        writer = recognizer.recognizer(DEFAULT)
        first = writer.enroll("s1", [orl(1, 1)]).identity
        writer.enroll("s2", [orl(2, 1)])
        twin = writer.enroll("s1 twin", [orl(1, 2)], allow_conflict=True).identity
        assert recognizer.store.conflicts(default_id(recognizer)) == [(first.id, twin.id)]
        follower.sync()
        calibration = follower.state(DEFAULT).calibration
        assert calibration is not None
        calibration.duplicate_bound = 1.0  # only the flag may drop the pair, not its score
        follower.recalibrate(force=True)
        tail = follower.state(DEFAULT).self_tail
        assert tail is not None and (tail.identity_pairs, tail.dropped_duplicates) == (2, 1)
        writer.delete_identity(twin.id)
        assert recognizer.store.conflicts(default_id(recognizer)) == []
        follower.sync()
        follower.recalibrate(force=True)
        tail = follower.state(DEFAULT).self_tail
        assert tail is not None and (tail.identity_pairs, tail.dropped_duplicates) == (1, 0)
    finally:
        follower.store.close()


def test_a_conflict_with_an_identity_deleted_meanwhile_is_not_stored(recognizer: Collections) -> None:
    cid = default_id(recognizer)
    gone, _ = recognizer.store.create_identity(cid, "gone", None, [new_face(recognizer, 1)])
    kept, _ = recognizer.store.create_identity(cid, "kept", None, [new_face(recognizer, 2)])
    recognizer.store.delete_identity(cid, gone.id)
    new, _ = recognizer.store.create_identity(
        cid, "new", None, [new_face(recognizer, 3)], conflicts=[(gone.id, 0.6), (kept.id, 0.5), (kept.id, 0.7)]
    )
    assert recognizer.store.conflicts(cid) == [(kept.id, new.id)]
    recognizer.store.add_faces(cid, kept.id, [new_face(recognizer, 4)], conflicts=[(new.id, 0.8)])  # flagged already
    assert recognizer.store.conflicts(cid) == [(kept.id, new.id)]
    recognizer.store.delete_collection(DEFAULT)
    assert recognizer.store.conflicts(cid) == []
