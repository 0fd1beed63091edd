"""Collections (tenants), the audit log and what a deletion removes (issue 10)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import orl
from tests.service.api.conftest import assert_consistent, files, make_client


def enroll(client: TestClient, prefix: str, name: str, *photos: bytes) -> dict:
    r = client.post(f"{prefix}/enroll", data={"name": name}, files=files("images", *photos))
    assert r.status_code == 201, r.text
    return r.json()


def test_two_collections_with_the_same_photos_never_see_each_other(client: TestClient) -> None:
    for name in ("small", "large"):
        r = client.post("/collections", json={"name": name, "target_fpir": 0.0001})
        assert r.status_code == 201, r.text
        assert r.json()["model"] == "sface@2021dec-int8bq" and r.json()["gallery_size"] == 0
    small = {enroll(client, "/collections/small", f"s{p}", orl(p, 1))["identity"]["id"] for p in (1, 2)}
    large = {
        enroll(client, "/collections/large", f"s{p}", orl(p, 1), orl(p, 2))["identity"]["id"] for p in range(1, 11)
    }
    assert not small & large
    for prefix, mine, size in (("/collections/small", small, 2), ("/collections/large", large, 20)):
        body = client.post(f"{prefix}/identify", files=files("image", orl(1, 5)), data={"top_k": 20}).json()
        assert body["collection"] == prefix.rsplit("/", 1)[1] and body["gallery_size"] == size
        face = body["faces"][0]
        assert face["decision"] == "match" and face["identity"]["name"] == "s1"
        assert {c["identity"]["id"] for c in face["candidates"]} <= mine
        listed = {i["id"] for i in client.get(f"{prefix}/identities").json()["items"]}
        assert listed == mine
    # Each its own threshold, from its own size, at the same target.
    t_small = client.get("/collections/small").json()["threshold"]
    t_large = client.get("/collections/large").json()["threshold"]
    assert t_small["source"] == t_large["source"] == "gallery"
    assert t_large["value"] > t_small["value"]
    assert t_small["expected_fpir"] <= 0.0001 and t_large["expected_fpir"] <= 0.0001
    # `default` is empty: identify there finds nobody, and the root routes are `default`.
    assert client.post("/identify", files=files("image", orl(1, 5))).json()["gallery_size"] == 0
    assert client.get("/identities").json()["total"] == 0
    # An id of one collection is not found through another.
    some = next(iter(large))
    assert client.get(f"/collections/small/identities/{some}").status_code == 404
    assert client.delete(f"/collections/small/identities/{some}").status_code == 404
    assert client.get(f"/collections/large/identities/{some}").status_code == 200
    assert_consistent(client)


def test_collections_are_listed_created_once_and_deleted_with_their_people(client: TestClient) -> None:
    assert [c["name"] for c in client.get("/collections").json()["items"]] == ["default"]
    assert client.post("/collections", json={"name": "door"}).status_code == 201
    r = client.post("/collections", json={"name": "door"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    for bad in (
        {"name": "Door"},
        {"name": ""},
        {"name": "a/b"},
        {"name": "x", "target_fpir": 2},
        {"name": "y", "extra": 1},
    ):
        assert client.post("/collections", json=bad).status_code == 422, bad
    person = enroll(client, "/collections/door", "Ada", orl(3, 1), orl(3, 2))
    assert client.get("/collections/door").json()["faces"] == 2
    assert client.delete("/collections/door").status_code == 204
    assert client.get("/collections/door").status_code == 404
    assert client.post("/collections/door/identify", files=files("image", orl(3, 3))).status_code == 404
    assert client.get(f"/collections/door/identities/{person['identity']['id']}").status_code == 404
    r = client.delete("/collections/default")
    assert r.status_code == 409
    ready = assert_consistent(client)
    assert ready["gallery_size"] == ready["searchable_faces_in_db"] == 0


def test_the_audit_log_records_writes_and_an_export_returns_everything_about_a_person(client: TestClient) -> None:
    body = enroll(client, "", "Ada", orl(4, 1), orl(4, 2))
    identity = body["identity"]["id"]
    face = body["accepted"][0]["face_id"]
    assert client.delete(f"/identities/{identity}/faces/{face}", headers={"X-Request-ID": "req-42"}).status_code == 204
    entries = client.get("/audit", params={"identity_id": identity}).json()
    assert entries["total"] == 2
    deleted, enrolled = entries["items"]  # newest first
    assert enrolled["action"] == "enroll" and enrolled["collection"] == "default" and enrolled["faces"] == 2
    assert deleted["action"] == "delete_face" and deleted["face_ids"] == [face] and deleted["request_id"] == "req-42"
    assert deleted["key_id"] is not None and deleted["client"]
    export = client.get(f"/identities/{identity}/export").json()
    assert export["identity"]["name"] == "Ada" and len(export["faces"]) == 1
    assert [e["action"] for e in export["audit"]] == ["delete_face", "enroll"]
    assert "embedding" not in str(export)
    assert client.get("/audit", params={"action": "export_identity"}).json()["total"] == 1
    assert client.get("/audit", params={"limit": 1, "offset": 1}).json()["items"][0]["action"] == "delete_face"


def test_a_deleted_identity_leaves_no_embedding_bytes_in_the_sqlite_files(tmp_path: Path) -> None:
    db = tmp_path / "secure.db"
    with make_client(f"sqlite:///{db}") as client:
        body = enroll(client, "", "Ada", orl(5, 1))
        enroll(client, "", "Bob", orl(6, 1))
        store = client.app.state.components.collections.store  # type: ignore[attr-defined]
        vector = store.identity_embeddings(1, body["identity"]["id"], "sface@2021dec-int8bq")[0]
        needle = np.ascontiguousarray(vector, dtype="<f4").tobytes()[:64]

        def on_disk() -> bool:
            return any(p.exists() and needle in p.read_bytes() for p in (db, Path(f"{db}-wal")))

        assert on_disk()
        assert client.delete(f"/identities/{body['identity']['id']}").status_code == 204
        assert not on_disk()
        assert client.get("/identities").json()["total"] == 1


@pytest.mark.parametrize("bad", ["/identities/9223372036854775808", "/identities/0", "/identities?offset=-1"])
def test_ids_past_int64_are_422_not_500(client: TestClient, bad: str) -> None:
    assert client.get(bad).status_code == 422


def test_a_gallery_of_ten_real_people_calibrates_its_own_threshold(tmp_path: Path) -> None:
    """Once a collection holds 10 identities (45 pairs of people), their between-identity scores are
    pooled with the model's record; the source says so, the held-out strangers stay unknown, and a
    setting turns it off."""
    url = f"sqlite:///{tmp_path / 'self.db'}"
    with make_client(url) as client:
        for person in range(1, 11):
            enroll(client, "", f"s{person}", *(orl(person, i) for i in (1, 2, 3)))
    with make_client(url) as client:  # a restart rebuilds the galleries and publishes their own tail
        body = client.post("/identify", files=files("image", orl(1, 7))).json()
        assert body["threshold_source"] == "gallery-self", body
        assert body["threshold_pairs"]["gallery_identity_pairs"] == 45 and body["threshold_pairs"]["gallery"] > 0
        low, high = body["fpir_interval"]
        assert low <= body["expected_fpir"] <= high
        assert body["faces"][0]["decision"] == "match" and body["faces"][0]["identity"]["name"] == "s1"
        for stranger in range(11, 21):  # held out from every calibration
            face = client.post("/identify", files=files("image", orl(stranger, 1))).json()["faces"][0]
            assert face["decision"] == "unknown", (stranger, face["similarity"])
        assert client.get("/collections/default").json()["threshold"]["source"] == "gallery-self"
    with make_client(url, self_calibration=False) as client:
        assert client.post("/identify", files=files("image", orl(1, 7))).json()["threshold_source"] == "gallery"
