"""`requires(scope)`: every refusal is exactly 401, 403 or 429 with its header and JSON body."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from service.auth import Authenticator, KeyStore, RateLimiter
from service.auth.principal import SCOPES
from service.settings import Settings
from tests.service.auth.conftest import client_for, tiny_app

ROUTES = {
    "identify": ("POST", "/identify"),
    "enroll": ("POST", "/enroll"),
    "read": ("GET", "/identities"),
    "delete": ("DELETE", "/identities/1"),
    "admin": ("GET", "/audit"),
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_error(response: object, status: int, code: str) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.json() == {"error": {"code": code, "message": response.json()["error"]["message"]}}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer fid_000000000000_" + "A" * 43},  # well-formed, unknown
        {"X-API-Key": "not a key"},
        {"X-API-Key": "x" * 300},
        {"Authorization": "Bearer \xfcn\xefcode-key".encode("latin-1")},
    ],
)
def test_no_or_bad_key_is_401_with_www_authenticate(keys: KeyStore, headers: dict[str, str]) -> None:
    with client_for(keys) as client:
        for method, path in ROUTES.values():
            response = client.request(method, path, headers=headers)
            assert_error(response, 401, "unauthorized")
            assert response.headers["WWW-Authenticate"] == "Bearer"


def test_right_prefix_wrong_secret_is_401(keys: KeyStore) -> None:
    _, key = keys.create("app", "identify")
    forged = key[:-5] + ("AAAAA" if not key.endswith("AAAAA") else "BBBBB")
    with client_for(keys) as client:
        assert_error(client.post("/identify", headers=bearer(forged)), 401, "unauthorized")
        assert client.post("/identify", headers=bearer(key)).status_code == 200


def test_each_scope_opens_its_routes_only_and_admin_opens_all(keys: KeyStore) -> None:
    made = {scope: keys.create(f"only-{scope}", scope)[1] for scope in SCOPES}
    with client_for(keys) as client:
        for scope, key in made.items():
            for needed, (method, path) in ROUTES.items():
                response = client.request(method, path, headers=bearer(key))
                if scope in (needed, "admin"):
                    assert response.status_code == 200, (scope, needed, response.text)
                else:
                    assert_error(response, 403, "forbidden")
                    assert "WWW-Authenticate" not in response.headers
                    assert needed in response.json()["error"]["message"]


def test_x_api_key_works_and_the_principal_comes_back(keys: KeyStore) -> None:
    record, key = keys.create("app", "identify,enroll")
    with client_for(keys) as client:
        assert client.post("/identify", headers={"X-API-Key": key}).json() == {"key_id": record.id, "name": "app"}
        assert client.post("/identify", headers={"Authorization": f"bearer {key}"}).status_code == 200


def test_a_revoked_key_stops_within_the_cache_time(keys: KeyStore) -> None:
    """Revoked by another process (here: straight in the database), so this one's cache must expire."""
    record, key = keys.create("app", "identify")
    with client_for(keys, cache_seconds=0.5) as client:
        assert client.post("/identify", headers=bearer(key)).status_code == 200  # cached now
        keys.revoke(record.id)
        revoked_at = time.monotonic()
        while True:
            response = client.post("/identify", headers=bearer(key))
            if response.status_code == 401:
                break
            assert response.status_code == 200
            time.sleep(0.02)
        assert time.monotonic() - revoked_at < 1.0
        assert_error(response, 401, "unauthorized")
        assert response.json()["error"]["message"] == "the API key was revoked"
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_rate_limit_429_with_retry_after(keys: KeyStore) -> None:
    _, key = keys.create("slow", "identify", rate_limit=2)
    _, other = keys.create("default-rate", "identify")
    _, unlimited = keys.create("unlimited", "identify", rate_limit=0)
    with client_for(keys, per_minute=3) as client:
        assert [client.post("/identify", headers=bearer(key)).status_code for _ in range(2)] == [200, 200]
        response = client.post("/identify", headers=bearer(key))
        assert_error(response, 429, "rate_limited")
        assert 1 <= int(response.headers["Retry-After"]) <= 30  # one request comes back every 30 s
        # Each key has its own bucket; the default applies where the key has none; 0 is no limit.
        assert [client.post("/identify", headers=bearer(other)).status_code for _ in range(4)] == [200, 200, 200, 429]
        assert all(client.post("/identify", headers=bearer(unlimited)).status_code == 200 for _ in range(20))


def test_rate_limiter_refills_at_the_rate() -> None:
    now = [100.0]
    limiter = RateLimiter(60, clock=lambda: now[0])
    assert [limiter.acquire("k") for _ in range(60)] == [0.0] * 60
    assert limiter.acquire("k") == pytest.approx(1.0)
    now[0] += 0.5
    assert limiter.acquire("k") == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.acquire("k") == 0.0
    assert limiter.acquire("k", per_minute=0) == 0.0
    now[0] += 3600
    assert sum(limiter.acquire("k") == 0.0 for _ in range(100)) == 60  # never more than a minute's worth


def test_auth_off_lets_everything_through_as_anonymous(keys: KeyStore) -> None:
    with client_for(keys, enabled=False) as client:
        for method, path in ROUTES.values():
            assert client.request(method, path).status_code == 200
        assert client.post("/identify").json()["key_id"] is None


def test_a_cached_key_check_is_well_under_a_millisecond(keys: KeyStore) -> None:
    _, key = keys.create("app", "identify")
    auth = Authenticator(keys, cache_seconds=1.0)
    auth.verify(key)  # fills the cache
    start = time.perf_counter()
    for _ in range(1000):
        principal = auth.verify_cached(key)
        assert principal is not None
        auth.authorize(principal, "identify")
    per_check = (time.perf_counter() - start) / 1000
    assert per_check < 1e-4, per_check


def test_the_cache_stays_bounded_under_garbage(keys: KeyStore) -> None:
    auth = Authenticator(keys, cache_seconds=60, max_cached=50)
    for i in range(200):
        with pytest.raises(Exception, match="not valid"):
            auth.verify(f"garbage-key-{i:04d}-" + "x" * 20)
    assert len(auth._cache) <= 50


def test_metrics_are_open_unless_the_setting_asks_for_a_key(keys: KeyStore) -> None:
    _, key = keys.create("prometheus", "read")
    with TestClient(tiny_app(Authenticator(keys), Settings(sync_interval=0))) as client:
        assert client.get("/metrics").status_code == 200
    with TestClient(tiny_app(Authenticator(keys), Settings(sync_interval=0, metrics_require_key=True))) as client:
        response = client.get("/metrics")
        assert_error(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert client.get("/metrics", headers=bearer(key)).status_code == 200  # any valid key
        keys.revoke(keys.resolve("prometheus").id)
        client.app.state.components.auth.forget()  # type: ignore[attr-defined]
        assert client.get("/metrics", headers=bearer(key)).status_code == 401
