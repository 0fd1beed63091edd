"""Issue 12: answers a client can rely on under odd requests (tiny images, unknown methods)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import orl
from tests.service.api.conftest import assert_consistent, files, make_client


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (128, 128, 128)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    db = Path(tmp_path_factory.mktemp("hardening")) / "faceid.db"
    with make_client(f"sqlite:///{db}", min_face_size=12) as c:
        yield c


@pytest.mark.parametrize("size", [(1, 1), (11, 400), (400, 11)])
def test_an_image_too_small_for_a_face_is_422_on_every_image_route(client: TestClient, size: tuple[int, int]) -> None:
    tiny = png(*size)
    for path, body in [
        ("/identify", files("image", tiny)),
        ("/detect", files("image", tiny)),
        ("/verify", files("image_a", tiny) + files("image_b", orl(1, 1))),
        ("/verify", files("image_a", orl(1, 1)) + files("image_b", tiny)),
        ("/enroll", files("images", tiny)),
    ]:
        r = client.post(path, files=body, data={"name": "tiny"} if path == "/enroll" else None)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["error"]["code"] == "image_too_small", (path, r.text)
    # In enroll beside a good image, the tiny one is that image's rejection.
    r = client.post("/enroll", files=files("images", orl(1, 1), tiny), data={"name": "s1", "allow_conflict": "true"})
    assert r.status_code == 201, r.text
    assert [(x["image"], x["code"]) for x in r.json()["rejected"]] == [(1, "image_too_small")]
    assert_consistent(client)


def test_an_image_at_the_minimum_is_looked_at(client: TestClient) -> None:
    r = client.post("/detect", files=files("image", png(12, 12)))
    assert r.status_code == 200, r.text
    assert r.json()["faces"] == []


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/identities/1", "DELETE, GET, PATCH"),
        ("OPTIONS", "/identities/1/faces", "GET, POST"),
        ("PUT", "/collections/default/identities/1", "DELETE, GET, PATCH"),
        ("POST", "/keys/1", "DELETE"),
        ("DELETE", "/keys", "GET, POST"),
        ("TRACE", "/collections/shop", "DELETE, GET"),
        ("POST", "/health", "GET"),
    ],
)
def test_an_unknown_method_is_405_with_every_allowed_method(
    client: TestClient, method: str, path: str, allowed: str
) -> None:
    r = client.request(method, path)
    assert r.status_code == 405, r.text
    assert r.headers["allow"] == allowed
    assert r.json()["error"]["code"] == "method_not_allowed"


def test_every_credential_sent_must_hold(client: TestClient) -> None:
    """A malformed Authorization beside a good X-API-Key, or two different keys, is 401, not a guess."""
    from tests.service.api.conftest import ADMIN_KEY

    assert client.get("/identities", headers={"Authorization": "", "X-API-Key": ADMIN_KEY}).status_code == 200
    for headers in (
        {"Authorization": "Basic Zm9vOmJhcg==", "X-API-Key": ADMIN_KEY},
        {"Authorization": f"Bearer {ADMIN_KEY}", "X-API-Key": ADMIN_KEY + "x"},
    ):
        r = client.get("/identities", headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["error"]["code"] == "unauthorized"


def test_the_schema_documents_the_error_shape_and_links(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    enroll = schema["paths"]["/enroll"]["post"]["responses"]
    assert enroll["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    assert "Retry-After" in enroll["503"]["headers"]
    assert enroll["201"]["links"]["GetIdentity"]["parameters"] == {"identity_id": "$response.body#/identity/id"}
    scoped = schema["paths"]["/collections/{collection}/enroll"]["post"]["responses"]["201"]["links"]
    assert scoped["DeleteFace"]["parameters"]["collection"] == "$request.path.collection"


def test_a_key_cannot_revoke_itself(client: TestClient) -> None:
    own = [k["id"] for k in client.get("/keys").json()["items"] if k["active"] and "admin" in k["scopes"]]
    r = client.delete(f"/keys/{own[0]}")
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict", r.text
    assert client.get("/keys").status_code == 200  # still in
    created = client.post("/keys", json={"name": "spare-admin", "scopes": ["admin"]}).json()
    assert client.delete(f"/keys/{created['id']}").status_code == 204  # another key: revoked
