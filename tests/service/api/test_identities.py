from fastapi.testclient import TestClient

from tests.conftest import orl
from tests.service.api.conftest import assert_consistent, files


def enroll(client: TestClient, name: str, person: int, external_id: str | None = None) -> dict:
    data = {"name": name} | ({"external_id": external_id} if external_id else {})
    r = client.post("/enroll", data=data, files=files("images", orl(person, 1), orl(person, 2)))
    assert r.status_code == 201, r.json()
    return r.json()


def test_crud(client: TestClient) -> None:
    a = enroll(client, "Alice", 1, "a-1")["identity"]
    enroll(client, "Bob", 2)
    listing = client.get("/identities", params={"name": "ali"}).json()
    assert listing["total"] == 1 and listing["items"][0]["id"] == a["id"]
    assert client.get("/identities", params={"limit": 1, "offset": 1}).json()["items"][0]["name"] == "Bob"

    patched = client.patch(f"/identities/{a['id']}", json={"name": "Alice L."}).json()
    assert patched["name"] == "Alice L." and patched["external_id"] == "a-1"
    conflict = client.patch(f"/identities/{a['id']}", json={"external_id": "a-1"})
    assert conflict.status_code == 200
    b_id = client.get("/identities", params={"name": "bob"}).json()["items"][0]["id"]
    taken = client.patch(f"/identities/{b_id}", json={"external_id": "a-1"})
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "conflict"
    assert client.patch(f"/identities/{a['id']}", json={}).status_code == 422
    for renamed in ({"name": "   "}, {"name": "x" * 201}, {"external_id": ""}):  # as strict as /enroll
        assert client.patch(f"/identities/{a['id']}", json=renamed).status_code == 422, renamed
    assert client.patch(f"/identities/{a['id']}", json={"colour": "red"}).status_code == 422

    added = client.post(f"/identities/{a['id']}/faces", files=files("images", orl(1, 3)))
    assert added.status_code == 201 and added.json()["identity"]["faces"] == 3
    faces = client.get(f"/identities/{a['id']}/faces").json()["items"]
    assert len(faces) == 3 and faces[0]["model"] == "sface@2021dec-int8bq"
    assert client.delete(f"/identities/{a['id']}/faces/{faces[0]['id']}").status_code == 204
    assert client.get(f"/identities/{a['id']}").json()["faces"] == 2
    assert_consistent(client)

    assert client.delete(f"/identities/{a['id']}").status_code == 204
    gone = client.get(f"/identities/{a['id']}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
    probe = client.post("/identify", files=files("image", orl(1, 9))).json()["faces"][0]
    assert probe["decision"] == "unknown"
    assert all(c["identity"]["id"] != a["id"] for c in probe["candidates"])
    assert assert_consistent(client)["gallery_size"] == 2


def test_unknown_ids_are_404(client: TestClient) -> None:
    assert client.get("/identities/12345").status_code == 404
    assert client.patch("/identities/12345", json={"name": "x"}).status_code == 404
    assert client.delete("/identities/12345").status_code == 404
    assert client.get("/identities/12345/faces").status_code == 404
    assert client.post("/identities/12345/faces", files=files("images", orl(1, 1))).status_code == 404
    a = enroll(client, "A", 3)["identity"]
    assert client.delete(f"/identities/{a['id']}/faces/999999").status_code == 404
    assert client.get("/identities/0").status_code == 422
    assert client.get("/identities/abc").status_code == 422


def test_duplicate_external_id_on_enroll_stores_nothing(client: TestClient) -> None:
    enroll(client, "A", 1, "dup")
    r = client.post("/enroll", data={"name": "B", "external_id": "dup"}, files=files("images", orl(2, 1)))
    assert r.status_code == 409
    assert client.get("/identities").json()["total"] == 1
    assert assert_consistent(client)["gallery_size"] == 2
