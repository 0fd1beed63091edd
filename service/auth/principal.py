"""Who is calling: a key's id, name, scopes, collections and rate limit, fixed for one request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Scope = Literal["identify", "enroll", "read", "delete", "admin"]
# identify: identify, verify, detect; enroll: enroll, add faces; read: list and get identities
# and faces; delete: delete faces and identities; admin: everything, plus keys, collections, audit.
SCOPES: tuple[str, ...] = get_args(Scope)


def parse_scopes(value: str | list[str] | tuple[str, ...] | frozenset[str]) -> frozenset[str]:
    """`identify,enroll` (or a list) to a set of known scopes; anything else is a ValueError."""
    items = value.split(",") if isinstance(value, str) else list(value)
    scopes = frozenset(s.strip() for s in items if s.strip())
    unknown = sorted(scopes - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scopes {unknown}; scopes are {', '.join(SCOPES)}")
    if not scopes:
        raise ValueError(f"at least one scope is needed: {', '.join(SCOPES)}")
    return scopes


@dataclass(frozen=True)
class Principal:
    """The caller of one request. `collections` None means every collection."""

    key_id: int | None  # None only when FACEID_AUTH=false (no key was asked for)
    name: str
    scopes: frozenset[str]
    collections: frozenset[str] | None = None
    rate_limit: int | None = None  # requests per minute; None: FACEID_RATE_LIMIT_PER_MINUTE

    def can(self, scope: str) -> bool:
        """`admin` implies every scope."""
        return scope in self.scopes or "admin" in self.scopes

    def sees(self, collection: str) -> bool:
        return self.collections is None or collection in self.collections


# Every request when FACEID_AUTH=false (local experiments only).
ANONYMOUS = Principal(key_id=None, name="anonymous (FACEID_AUTH=false)", scopes=frozenset(SCOPES))
