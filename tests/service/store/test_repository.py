import numpy as np
import pytest

from service.errors import Conflict, NotFound
from service.store import CollectionStore, NewFace, Store
from service.store.migrate import upgrade


@pytest.fixture
def store(db_url: str) -> Store:
    store = Store.from_url(db_url)
    upgrade(store.engine)
    return store


def people(store: Store) -> CollectionStore:
    """The identity operations of the `default` collection."""
    return store.collection(store.ensure_collection("default", "m@1").id)


def face(seed: int, model: str = "m@1") -> NewFace:
    v = np.random.default_rng(seed).standard_normal(16).astype(np.float32)
    return NewFace(embedding=v / np.linalg.norm(v), model=model, box=(1, 2, 30, 40), score=0.9, image_sha256="ab" * 32)


def test_identity_lifecycle(store: Store) -> None:
    identity, faces = people(store).create_identity("Ada", "ext-1", [face(1), face(2)])
    assert identity.faces == 2 and identity.external_id == "ext-1"
    assert [f.identity_id for f in faces] == [identity.id] * 2
    assert people(store).get_identity(identity.id).name == "Ada"
    renamed = people(store).update_identity(identity.id, name="Ada L.")
    assert renamed.name == "Ada L." and renamed.external_id == "ext-1"
    cleared = people(store).update_identity(identity.id, clear_external_id=True)
    assert cleared.external_id is None
    assert people(store).delete_identity(identity.id) == [f.id for f in faces]
    with pytest.raises(NotFound):
        people(store).get_identity(identity.id)
    assert store.count_faces_by_model() == {}


def test_external_id_is_unique_and_a_conflict_stores_nothing(store: Store) -> None:
    people(store).create_identity("A", "same", [face(1)])
    with pytest.raises(Conflict):
        people(store).create_identity("B", "same", [face(2)])
    items, total = people(store).list_identities(limit=10, offset=0)
    assert total == 1 and [i.name for i in items] == ["A"]
    assert store.count_faces_by_model() == {"m@1": 1}


def test_list_filters_by_name_and_pages(store: Store) -> None:
    for name in ["Alice", "alfred", "Bob", "100%_x"]:
        people(store).create_identity(name, None, [face(len(name))])
    items, total = people(store).list_identities(limit=1, offset=1, name="AL")
    assert total == 2 and [i.name for i in items] == ["alfred"]
    assert people(store).list_identities(limit=10, offset=0, name="%_")[1] == 1  # wildcards are literal


def test_embeddings_round_trip_in_batches_by_model(store: Store) -> None:
    made = [face(i) for i in range(7)]
    identity, records = people(store).create_identity("P", None, made)
    people(store).create_identity("Q", None, [face(99, model="other@2")])
    batches = list(store.iter_embeddings("m@1", batch=3))
    assert [len(ids) for ids, _, _, _ in batches] == [3, 3, 1]
    vectors = np.concatenate([v for _, _, _, v in batches])
    np.testing.assert_array_equal(vectors, np.stack([f.embedding for f in made]))
    assert store.count_faces_by_model() == {"m@1": 7, "other@2": 1}
    some = [records[1].id, records[5].id]
    ((ids, owners, _, _),) = list(store.iter_embeddings("m@1", face_ids=some))
    assert ids.tolist() == some and set(owners.tolist()) == {identity.id}


def test_every_write_is_in_the_change_log(store: Store) -> None:
    identity, records = people(store).create_identity("P", None, [face(1), face(2)])
    people(store).delete_face(identity.id, records[0].id)
    with pytest.raises(NotFound):
        people(store).delete_face(identity.id, records[0].id)
    people(store).delete_identity(identity.id)
    log = store.changes_since(0)
    assert [(c.op, c.face_id) for c in log] == [
        ("add", records[0].id),
        ("add", records[1].id),
        ("remove", records[0].id),
        ("remove", records[1].id),
    ]
    assert store.last_change() == log[-1].seq
    assert store.changes_since(log[1].seq)[0].op == "remove"


def test_identities_read_in_one_query_keep_their_face_counts_collection_and_utc_times(store: Store) -> None:
    ada, ada_faces = people(store).create_identity("Ada", None, [face(1), face(2), face(3)])
    bob, _ = people(store).create_identity("Bob", "b-1", [face(4)])
    people(store).delete_face(ada.id, ada_faces[0].id)
    other = store.collection(store.ensure_collection("other", "m@1").id)
    stranger, _ = other.create_identity("Cy", None, [face(5)])
    got = people(store).get_identities([ada.id, bob.id, stranger.id, 10**9])
    assert set(got) == {ada.id, bob.id}  # another collection's identity and a missing id are not returned
    assert (got[ada.id].faces, got[bob.id].faces) == (2, 1)
    assert got[bob.id].external_id == "b-1" and got[ada.id].name == "Ada"
    assert all(r.created_at.utcoffset() is not None and r.updated_at.utcoffset() is not None for r in got.values())
    assert got[ada.id] == people(store).get_identity(ada.id)
