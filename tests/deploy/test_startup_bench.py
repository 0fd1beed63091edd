"""bench/startup.py stays runnable: a tiny fill on both databases loads every face."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import startup
from tests.conftest import _postgres_admin_url


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_fills_and_measures(database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if database == "postgresql":
        monkeypatch.setattr(startup, "POSTGRES", _postgres_admin_url())  # skips (fails in CI) without a server
    out = tmp_path / "startup.json"
    args = ["--faces", "3001", "--database", database, "--no-server", "--workdir", str(tmp_path), "--out", str(out)]
    assert startup.main(args) == 0  # measure() asserts the gallery holds every face
    result = json.loads(out.read_text())[f"{database}/3001"]
    assert result["build_recognizer_s"] > 0 and result["gallery_rebuild_s"] > 0 and result["faces_per_s"] > 0
    assert not list(tmp_path.glob("*.db")), "the SQLite file is removed without --keep"
