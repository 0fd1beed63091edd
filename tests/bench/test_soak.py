"""bench.soak for one minute (CI): mixed traffic on a real server over a 10,000-face gallery, no
errors, and the gallery agrees with the database at the end."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import soak

pytestmark = pytest.mark.slow


def test_a_minute_of_mixed_traffic_leaves_no_error_and_no_drift(tmp_path: Path) -> None:
    result = soak.run("sqlite", 1.0, 2, 10_000, 10.0, 0, tmp_path)
    assert result["errors"] == 0, result["error_examples"]
    assert set(result["statuses"]) == {"identify", "enroll", "delete"}, result["statuses"]
    assert result["in_sync"] and result["gallery_size"] == result["searchable_faces_in_db"], result
    assert result["gallery_size"] >= 10_000
    assert len(result["samples"]) >= 5
    for sample in result["samples"]:
        assert sample["rss_mb"] > 0 and sample["open_fds"] > 0 and sample["db_connections"] >= 1
        assert sample["requests"] > 0 and sample["p99_ms"] >= sample["p50_ms"]
    soak.plot(result, tmp_path / "soak.png")
    assert (tmp_path / "soak.png").stat().st_size > 0
