"""POST/GET/DELETE /keys on the real app: admin only, the key shown once, revocation at once."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth import hash_key
from service.settings import Settings


@pytest.fixture
def app(db_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    """The real app on a fresh database; its first start wrote the admin key."""
    key_file = tmp_path / "admin.key"
    settings = Settings(
        database_url=db_url, sync_interval=0, providers=["CPUExecutionProvider"], admin_key_file=key_file
    )
    with TestClient(create_app(settings)) as client:
        yield client, key_file.read_text().strip()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_need_an_admin_key(app: tuple[TestClient, str]) -> None:
    client, admin = app
    for method, path in (("POST", "/keys"), ("GET", "/keys"), ("DELETE", "/keys/1")):
        response = client.request(method, path)
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"
        wrong = client.request(method, path, headers=auth(admin[:-1] + ("x" if admin[-1] != "x" else "y")))
        assert wrong.status_code == 401
    created = client.post("/keys", json={"name": "reader", "scopes": ["read", "enroll"]}, headers=auth(admin))
    reader = created.json()["key"]
    for method, path in (("POST", "/keys"), ("GET", "/keys"), ("DELETE", "/keys/1")):
        response = client.request(method, path, headers=auth(reader), json={"name": "x", "scopes": ["admin"]})
        assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    assert [k["name"] for k in client.get("/keys", headers=auth(admin)).json()["items"]] == ["admin", "reader"]


def test_create_list_revoke(app: tuple[TestClient, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client, admin = app
    body = {"name": "shop", "scopes": ["identify", "enroll"], "collections": ["shop", "shop-2"], "rate_limit": 600}
    created = client.post("/keys", json=body, headers=auth(admin))
    assert created.status_code == 201, created.text
    shown = created.json()
    key = shown.pop("key")
    assert key.startswith(shown["prefix"] + "_") and len(key) == 60
    assert shown["scopes"] == ["identify", "enroll"] and shown["collections"] == ["shop", "shop-2"]
    assert shown["rate_limit"] == 600 and shown["active"] and shown["revoked_at"] is None
    listed = client.get("/keys", headers=auth(admin))
    assert listed.status_code == 200
    assert listed.json()["items"][1] == shown
    for secret in (key, key.split("_", 2)[2], hash_key(key), admin, hash_key(admin)):
        assert secret not in listed.text
    # The new key is a key: it reads nothing it has no scope for, but it authenticates.
    assert client.get("/keys", headers={"X-API-Key": key}).status_code == 403
    revoked = client.delete(f"/keys/{shown['id']}", headers=auth(admin))
    assert revoked.status_code == 204 and revoked.content == b""
    gone = client.get("/keys", headers=auth(key))
    assert gone.status_code == 401 and gone.json()["error"]["message"] == "the API key was revoked"
    after = client.get("/keys", headers=auth(admin)).json()["items"][1]
    assert not after["active"] and after["revoked_at"] is not None
    assert client.delete(f"/keys/{shown['id']}", headers=auth(admin)).status_code == 204  # idempotent
    missing = client.delete("/keys/9999", headers=auth(admin))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert key not in caplog.text and admin not in caplog.text


BAD = [
    ({"name": "admin", "scopes": ["read"]}, 409, "conflict"),
    ({"name": "x", "scopes": ["superuser"]}, 422, "invalid_request"),
    ({"name": "x", "scopes": []}, 422, "invalid_request"),
    ({"name": "", "scopes": ["read"]}, 422, "invalid_request"),
    ({"name": "x\u0000", "scopes": ["read"]}, 422, "invalid_request"),
    ({"name": "x", "scopes": ["admin"], "collections": ["shop"]}, 422, "invalid_request"),
    ({"name": "x", "scopes": ["read"], "collections": []}, 422, "invalid_request"),
    ({"name": "x", "scopes": ["read"], "collections": ["Bad Name"]}, 422, "invalid_request"),
    ({"name": "x", "scopes": ["read"], "rate_limit": -1}, 422, "invalid_request"),
    ({"scopes": ["read"]}, 422, "invalid_request"),
]


def test_bad_requests_store_nothing(app: tuple[TestClient, str]) -> None:
    client, admin = app
    for body, status, code in BAD:
        response = client.post("/keys", json=body, headers=auth(admin))
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["code"] == code
    assert [k["name"] for k in client.get("/keys", headers=auth(admin)).json()["items"]] == ["admin"]


def test_the_api_docs_offer_both_ways_to_send_a_key(app: tuple[TestClient, str]) -> None:
    client, _ = app
    spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["HTTPBearer"] == {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer <key>`"}
    assert schemes["APIKeyHeader"]["in"] == "header" and schemes["APIKeyHeader"]["name"] == "X-API-Key"
    for method in ("get", "post"):
        operation = spec["paths"]["/keys"][method]
        assert {"HTTPBearer": []} in operation["security"] and {"APIKeyHeader": []} in operation["security"]
        assert {"401", "403", "429"} <= set(operation["responses"])


def test_a_key_revoked_on_one_replica_stops_on_another_within_a_second(
    app: tuple[TestClient, str], db_url: str, tmp_path: Path
) -> None:
    """Two processes on one database (here: two apps): DELETE /keys on one, the other refuses
    the key within FACEID_AUTH_CACHE_SECONDS (0.5 s) and one database read."""
    import time

    first, admin = app
    settings = Settings(
        database_url=db_url, sync_interval=0, providers=["CPUExecutionProvider"], admin_key_file=tmp_path / "admin.key"
    )
    with TestClient(create_app(settings)) as second:
        key = first.post("/keys", json={"name": "app", "scopes": ["read"]}, headers=auth(admin)).json()
        assert second.get("/keys", headers=auth(key["key"])).status_code == 403  # known there, and cached
        assert first.delete(f"/keys/{key['id']}", headers=auth(admin)).status_code == 204
        revoked = time.monotonic()
        assert first.get("/keys", headers=auth(key["key"])).status_code == 401  # at once where it was revoked
        while (status := second.get("/keys", headers=auth(key["key"])).status_code) == 403:
            assert time.monotonic() - revoked < 1.0
            time.sleep(0.02)
        assert status == 401 and time.monotonic() - revoked < 1.0
