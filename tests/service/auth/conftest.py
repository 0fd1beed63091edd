from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api.auth import AdminKey, DeleteKey, EnrollKey, IdentifyKey, MetricsKey, ReadKey
from service.api.errors import install_error_handlers
from service.auth import Authenticator, KeyStore, RateLimiter
from service.settings import Settings
from service.store import Store
from service.store.migrate import upgrade


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A migrated database, on SQLite and on PostgreSQL."""
    store = Store.from_url(db_url)
    upgrade(store.engine)
    yield store
    store.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = Store.from_url(f"sqlite:///{tmp_path / 'keys.db'}")
    upgrade(store.engine)
    yield store
    store.close()


def tiny_app(auth: Authenticator, settings: Settings | None = None) -> FastAPI:
    """One route per scope, the way the product's routes declare them, and the product's error handlers."""
    app = FastAPI()
    install_error_handlers(app)
    # Only what `requires()` reads of the composition root.
    app.state.components = SimpleNamespace(auth=auth, settings=settings or Settings(sync_interval=0))

    @app.post("/identify")
    async def identify(principal: IdentifyKey) -> dict[str, object]:
        return {"key_id": principal.key_id, "name": principal.name}

    @app.post("/enroll")
    async def enroll(principal: EnrollKey) -> dict[str, object]:
        return {"key_id": principal.key_id}

    @app.get("/identities")
    async def read(principal: ReadKey) -> dict[str, object]:
        return {"key_id": principal.key_id}

    @app.delete("/identities/1")
    async def delete(principal: DeleteKey) -> dict[str, object]:
        return {"key_id": principal.key_id}

    @app.get("/audit")
    async def audit(principal: AdminKey) -> dict[str, object]:
        return {"key_id": principal.key_id}

    @app.get("/metrics")
    async def metrics(_: MetricsKey) -> dict[str, object]:
        return {"ok": True}

    return app


@pytest.fixture
def keys(sqlite_store: Store) -> KeyStore:
    return KeyStore(sqlite_store)


def client_for(keys: KeyStore, *, cache_seconds: float = 0.5, per_minute: int = 0, enabled: bool = True) -> TestClient:
    auth = Authenticator(keys, enabled=enabled, cache_seconds=cache_seconds, limiter=RateLimiter(per_minute))
    return TestClient(tiny_app(auth))
