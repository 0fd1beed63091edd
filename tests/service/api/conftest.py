from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings

# The admin key every test client sends (registered through FACEID_ADMIN_KEY, as compose does).
ADMIN_KEY = "test-admin-key-for-the-suite-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def make_client(db_url: str, **overrides: object) -> TestClient:
    """The real app on `db_url`, sending the suite's admin key with every request."""
    key_file = Path(tempfile.mkdtemp(prefix="faceid-key-")) / "admin.key"
    options: dict[str, object] = {"admin_key": ADMIN_KEY, "admin_key_file": key_file, **overrides}
    settings = Settings(database_url=db_url, sync_interval=0, providers=["CPUExecutionProvider"], **options)  # type: ignore[arg-type]
    return TestClient(create_app(settings), headers=AUTH)


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
