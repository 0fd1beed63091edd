"""Per-request stage timings, for the Server-Timing header and /metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

STAGES = ("decode", "detect", "align", "embed", "quality", "search", "db")


class Timings:
    def __init__(self) -> None:
        self.stages: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - start

    def header(self) -> str:
        """RFC Server-Timing value, durations in milliseconds."""
        return ", ".join(f"{name};dur={seconds * 1000:.2f}" for name, seconds in self.stages.items())
