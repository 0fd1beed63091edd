"""Every route under every refusal: no key, wrong key, revoked key, each scope short of the one it
needs, a key of another collection. The answer is exactly 401, 403 or 404, and nothing is stored."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.auth import KeyStore
from service.auth.principal import SCOPES
from tests.conftest import orl
from tests.service.api.conftest import files, make_client


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # {identity} and {face} are filled in
    scope: str
    body: Callable[[], dict]

    def call(self, client: TestClient, headers: dict[str, str], ids: dict[str, int], prefix: str = "") -> object:
        url = prefix + self.path.format(**ids)
        return client.request(self.method, url, headers=headers, **self.body())


def image(field: str) -> Callable[[], dict]:
    return lambda: {"files": files(field, orl(1, 2))}


ROUTES = [
    Route("POST", "/enroll", "enroll", lambda: {"data": {"name": "x"}, "files": files("images", orl(1, 2))}),
    Route("POST", "/identify", "identify", image("image")),
    Route("POST", "/verify", "identify", lambda: {"files": files("image_a", orl(1, 2)) + files("image_b", orl(1, 3))}),
    Route("POST", "/detect", "identify", image("image")),
    Route("GET", "/identities", "read", dict),
    Route("GET", "/identities/{identity}", "read", dict),
    Route("GET", "/identities/{identity}/faces", "read", dict),
    Route("PATCH", "/identities/{identity}", "enroll", lambda: {"json": {"name": "renamed"}}),
    Route("POST", "/identities/{identity}/faces", "enroll", image("images")),
    Route("DELETE", "/identities/{identity}/faces/{face}", "delete", dict),
    Route("DELETE", "/identities/{identity}", "delete", dict),
    Route("GET", "/identities/{identity}/export", "admin", dict),
]
ADMIN_ROUTES = [
    Route("POST", "/collections", "admin", lambda: {"json": {"name": "made-by-test"}}),
    Route("GET", "/collections", "read", dict),
    Route("GET", "/collections/default", "read", dict),
    Route("DELETE", "/collections/other", "admin", dict),
    Route("GET", "/audit", "admin", dict),
    Route("GET", "/keys", "admin", dict),
    Route("POST", "/keys", "admin", lambda: {"json": {"name": "k-by-test", "scopes": ["read"]}}),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, str], dict[str, int]]]:
    """One server with `default` and `other`, one person in each, and a key per case."""
    db = tmp_path_factory.mktemp("access") / "a.db"
    with make_client(f"sqlite:///{db}") as client:
        assert client.post("/collections", json={"name": "other"}).status_code == 201
        enrolled = client.post("/enroll", data={"name": "Ada"}, files=files("images", orl(1, 1))).json()
        client.post("/collections/other/enroll", data={"name": "Bob"}, files=files("images", orl(2, 1)))
        ids = {"identity": enrolled["identity"]["id"], "face": enrolled["accepted"][0]["face_id"]}
        store = KeyStore(client.app.state.components.collections.store)  # type: ignore[attr-defined]
        keys = {scope: store.create(f"only-{scope}", scope)[1] for scope in SCOPES}
        revoked_record, keys["revoked"] = store.create("revoked", "admin")
        store.revoke(revoked_record.id)
        # Every scope but admin (an admin key sees every collection), restricted to `other`.
        keys["other-collection"] = store.create("other-only", "identify,enroll,read,delete", collections=["other"])[1]
        yield client, keys, ids


def snapshot(client: TestClient) -> tuple[object, ...]:
    """What a refused request must not change."""
    ready = client.get("/ready").json()
    people = client.get("/identities").json()
    others = client.get("/collections/other/identities").json()
    return ready["gallery_fingerprint"], people, others, [c["name"] for c in client.get("/collections").json()["items"]]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("route", ROUTES + ADMIN_ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_every_refusal_is_exact_and_stores_nothing(
    world: tuple[TestClient, dict[str, str], dict[str, int]], route: Route
) -> None:
    client, keys, ids = world
    before = snapshot(client)
    cases: list[tuple[str, dict[str, str], int, str]] = [
        ("no key", {"Authorization": ""}, 401, "unauthorized"),
        ("wrong key", bearer("fid_0123456789ab_" + "x" * 43), 401, "unauthorized"),
        ("revoked key", bearer(keys["revoked"]), 401, "unauthorized"),
    ]
    for scope in SCOPES:
        if scope != route.scope and scope != "admin":
            cases.append((f"scope {scope}", bearer(keys[scope]), 403, "forbidden"))
    for name, headers, status, code in cases:
        r = route.call(client, headers, ids)
        assert r.status_code == status, (name, r.status_code, r.text)  # type: ignore[attr-defined]
        assert r.json()["error"]["code"] == code, (name, r.json())  # type: ignore[attr-defined]
        if status == 401:
            assert r.headers["www-authenticate"].startswith("Bearer")  # type: ignore[attr-defined]
    assert snapshot(client) == before


@pytest.mark.parametrize("route", [r for r in ROUTES if r.scope != "admin"], ids=lambda r: f"{r.method} {r.path}")
def test_a_key_of_another_collection_gets_404_on_default_and_on_the_id_through_its_own(
    world: tuple[TestClient, dict[str, str], dict[str, int]], route: Route
) -> None:
    client, keys, ids = world
    before = snapshot(client)
    other_key = bearer(keys["other-collection"])
    r = route.call(client, other_key, ids)  # `default`, which this key may not see
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text  # type: ignore[attr-defined]
    r = route.call(client, other_key, ids, prefix="/collections/default")
    assert r.status_code == 404, r.text  # type: ignore[attr-defined]
    if "{identity}" in route.path:  # Ada's id through `other`, which the key may see: not there either
        r = route.call(client, other_key, ids, prefix="/collections/other")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text  # type: ignore[attr-defined]
    assert snapshot(client) == before


def test_health_ready_and_metrics_need_no_key(world: tuple[TestClient, dict[str, str], dict[str, int]]) -> None:
    client, _, _ = world
    for path in ("/health", "/ready", "/metrics"):
        assert client.get(path, headers={"Authorization": ""}).status_code == 200, path


def test_x_api_key_works_like_bearer(world: tuple[TestClient, dict[str, str], dict[str, int]]) -> None:
    client, keys, _ = world
    r = client.get("/identities", headers={"Authorization": "", "X-API-Key": keys["read"]})
    assert r.status_code == 200 and r.json()["total"] == 1


def test_metrics_can_require_a_key(tmp_path: Path) -> None:
    with make_client(f"sqlite:///{tmp_path / 'm.db'}", metrics_require_key=True) as client:
        assert client.get("/metrics", headers={"Authorization": ""}).status_code == 401
        assert client.get("/metrics").status_code == 200
