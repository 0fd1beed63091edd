from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings


def make_client(db_url: str, **overrides: object) -> TestClient:
    settings = Settings(database_url=db_url, sync_interval=0, providers=["CPUExecutionProvider"], **overrides)  # type: ignore[arg-type]
    return TestClient(create_app(settings))


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    with make_client(db_url) as c:
        yield c


def files(field: str, *blobs: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(field, (f"{i}.img", blob, "application/octet-stream")) for i, blob in enumerate(blobs)]


def assert_consistent(client: TestClient) -> dict:
    ready = client.get("/ready")
    body = ready.json()
    assert ready.status_code == 200, body
    assert body["in_sync"] and body["gallery_size"] == body["searchable_faces_in_db"]
    return body
