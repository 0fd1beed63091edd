"""Requests per minute per key: a token bucket for each key, in this process.

A key may make `rate` requests at once, then one every 60/`rate` seconds. The buckets live in
each process, so with several workers or replicas each one allows the rate (the limit protects
a process's cores from one key, it is not a billing quota).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    def __init__(self, default_per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.default = default_per_minute
        self.clock = clock
        self._buckets: dict[object, tuple[float, float]] = {}  # key -> (tokens, when)
        self._lock = threading.Lock()

    def acquire(self, key: object, per_minute: int | None = None) -> float:
        """Take one request from `key`'s bucket: 0.0 when allowed, else the seconds until it would be.

        `per_minute` None means the default; 0 (either one) means no limit.
        """
        rate = self.default if per_minute is None else per_minute
        if rate <= 0:
            return 0.0
        per_second = rate / 60.0
        now = self.clock()
        with self._lock:
            tokens, then = self._buckets.get(key, (float(rate), now))
            tokens = min(float(rate), tokens + (now - then) * per_second)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / per_second
