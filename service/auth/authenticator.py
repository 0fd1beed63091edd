"""From a request's key to a `Principal`: lookup by public prefix, constant-time comparison of
hashes, scope check and rate limit.

What a prefix maps to is cached for `cache_seconds` (FACEID_AUTH_CACHE_SECONDS, 0.5 s by
default): a key check is then a sha256 and a dict lookup (microseconds), and a revoked key
stops working in every process and replica within that time plus one database read.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from service.auth.keys import KeyRecord, KeyStore, hash_key, prefix_of, well_formed
from service.auth.principal import ANONYMOUS, SCOPES, Principal
from service.auth.ratelimit import RateLimiter
from service.errors import Forbidden, RateLimited, Unauthorized

if TYPE_CHECKING:
    from service.settings import Settings

Found = tuple[KeyRecord, str] | None  # the key's record and stored hash; None: no such prefix


class _Miss:
    pass


MISS: Final = _Miss()
HOW = "send it as `Authorization: Bearer <key>` or `X-API-Key: <key>`"


class Authenticator:
    def __init__(
        self,
        keys: KeyStore,
        *,
        enabled: bool = True,
        cache_seconds: float = 0.5,
        limiter: RateLimiter | None = None,
        max_cached: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keys = keys
        self.enabled = enabled
        self.cache_seconds = cache_seconds
        self.limiter = limiter or RateLimiter(0)
        self.max_cached = max_cached
        self.clock = clock
        self._cache: dict[str, tuple[float, Found]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, keys: KeyStore) -> Authenticator:
        return cls(
            keys,
            enabled=settings.auth,
            cache_seconds=settings.auth_cache_seconds,
            limiter=RateLimiter(settings.rate_limit_per_minute),
        )

    # --- who is it --------------------------------------------------------------

    def verify(self, key: str | None) -> Principal:
        """The key's principal, reading the database when the cache has no fresh answer.
        Unauthorized for a missing, malformed, unknown or revoked key."""
        if not self.enabled:
            return ANONYMOUS
        prefix = self._prefix(key)
        found = self._cached(prefix)
        if isinstance(found, _Miss):
            found = self.keys.lookup(prefix)
            self._remember(prefix, found)
        return self._check(key or "", found)

    def verify_cached(self, key: str | None) -> Principal | None:
        """As `verify` without touching the database: None when it would have to (call `verify`
        off the event loop then)."""
        if not self.enabled:
            return ANONYMOUS
        prefix = self._prefix(key)
        found = self._cached(prefix)
        if isinstance(found, _Miss):
            return None
        return self._check(key or "", found)

    def forget(self) -> None:
        """Drop the cache (after this process revokes a key, so it stops at once here)."""
        with self._lock:
            self._cache.clear()

    def _prefix(self, key: str | None) -> str:
        if not key:
            raise Unauthorized(f"an API key is required: {HOW}")
        if not well_formed(key):
            raise Unauthorized("the API key is not valid")
        return prefix_of(key)

    def _cached(self, prefix: str) -> Found | _Miss:
        if self.cache_seconds <= 0:
            return MISS
        entry = self._cache.get(prefix)
        if entry is None or entry[0] <= self.clock():
            return MISS
        return entry[1]

    def _remember(self, prefix: str, found: Found) -> None:
        if self.cache_seconds <= 0:
            return
        now = self.clock()
        with self._lock:
            if len(self._cache) >= self.max_cached:  # many unknown prefixes: keep it bounded
                for stale in [p for p, (until, _) in self._cache.items() if until <= now]:
                    del self._cache[stale]
                if len(self._cache) >= self.max_cached:
                    self._cache.clear()
            self._cache[prefix] = (now + self.cache_seconds, found)

    @staticmethod
    def _check(key: str, found: Found) -> Principal:
        if found is None:
            raise Unauthorized("the API key is not valid")
        record, stored = found
        if not hmac.compare_digest(hash_key(key), stored):
            raise Unauthorized("the API key is not valid")
        if record.revoked_at is not None:
            raise Unauthorized("the API key was revoked")
        return record.principal()

    # --- may it -----------------------------------------------------------------

    def authorize(self, principal: Principal, scope: str) -> None:
        """Forbidden without the scope; RateLimited when the key's requests per minute are used up."""
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
        if not principal.can(scope):
            raise Forbidden(f"this key may not {scope}: it has the scopes {', '.join(sorted(principal.scopes))}")
        self.throttle(principal)

    def throttle(self, principal: Principal) -> None:
        if principal.key_id is None:
            return
        wait = self.limiter.acquire(principal.key_id, principal.rate_limit)
        if wait > 0:
            raise RateLimited(
                f"too many requests for this key ({principal.rate_limit or self.limiter.default} a minute)",
                retry_after=wait,
            )
