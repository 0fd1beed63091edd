"""API keys: their format, generation, hashing, and the `api_keys` table.

A key is `fid_<public>_<secret>`: `public` is 12 hex characters that find the row (the
key's *prefix* `fid_<public>` is public: it is listed, logged and revoked by), `secret` is
256 random bits from `secrets`. Only the sha256 of the whole key is stored: a key this random
cannot be found from its hash, so a database dump holds no usable key (no salt or slow hash
is needed, unlike passwords). A key given by the operator (FACEID_ADMIN_KEY) may have any
format; its prefix is then `ext_` and the start of its hash.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.auth.principal import SCOPES, Principal, parse_scopes
from service.errors import Conflict, InvalidInput, NotFound
from service.store import Store
from service.store.tables import ApiKeyRow, utcnow

TAG = "fid"
PUBLIC_CHARS = 12  # hex: 48 bits, only to find the row (the unique index catches a collision)
SECRET_BYTES = 32  # 256 bits
_KEY = re.compile(rf"({TAG}_[0-9a-f]{{{PUBLIC_CHARS}}})_[A-Za-z0-9_-]{{43}}")
# A key in a header: visible ASCII, no spaces.
_TOKEN = re.compile(r"[\x21-\x7e]+")
MAX_KEY_CHARS = 256
MIN_GIVEN_KEY_CHARS = 32
MAX_NAME_CHARS = 100
# A collection name, as service.api.deps.COLLECTION_NAME has it.
_COLLECTION = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def generate_key() -> str:
    return f"{TAG}_{secrets.token_hex(PUBLIC_CHARS // 2)}_{secrets.token_urlsafe(SECRET_BYTES)}"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def prefix_of(key: str) -> str:
    """The public part that finds a key's row: `fid_<12 hex>` for a generated key, `ext_` and
    the first 12 hex characters of its hash for a key given in another format."""
    match = _KEY.fullmatch(key)
    if match:
        return match.group(1)
    return "ext_" + hash_key(key)[:PUBLIC_CHARS]


def well_formed(key: str) -> bool:
    """What a header may carry at all (checked before any lookup)."""
    return 0 < len(key) <= MAX_KEY_CHARS and _TOKEN.fullmatch(key) is not None


def check_given_key(key: str) -> str:
    """A key the operator chose (FACEID_ADMIN_KEY or its file): long enough to be unguessable."""
    key = key.strip()
    if not well_formed(key) or len(key) < MIN_GIVEN_KEY_CHARS:
        raise ValueError(
            f"a given API key must be {MIN_GIVEN_KEY_CHARS} to {MAX_KEY_CHARS} visible ASCII characters without "
            "spaces (e.g. `openssl rand -hex 32`)"
        )
    return key


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise InvalidInput(f"a key's name is 1 to {MAX_NAME_CHARS} printable characters")
    return name


def check_collections(collections: list[str] | tuple[str, ...] | frozenset[str] | None) -> frozenset[str] | None:
    """Collection names (they need not exist yet); None: every collection."""
    if collections is None:
        return None
    names = frozenset(c.strip() for c in collections)
    if not names or any(not _COLLECTION.fullmatch(c) for c in names):
        raise InvalidInput(
            "collections are names of lower-case letters, digits, '-' and '_' (at most 64, starting with a letter "
            "or digit), at least one; leave them out for a key that sees every collection"
        )
    return names


@dataclass(frozen=True)
class KeyRecord:
    """A key as listed: never the key or its hash."""

    id: int
    name: str
    prefix: str
    scopes: frozenset[str]
    collections: frozenset[str] | None
    rate_limit: int | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def principal(self) -> Principal:
        return Principal(self.id, self.name, self.scopes, self.collections, self.rate_limit)


def _record(row: ApiKeyRow) -> KeyRecord:
    return KeyRecord(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        scopes=frozenset(s for s in row.scopes.split(",") if s),
        collections=None if row.collections is None else frozenset(c for c in row.collections.split(",") if c),
        rate_limit=row.rate_limit,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


class KeyTransaction:
    """Reads and writes of keys inside one serialised write transaction (see `KeyStore.writing`)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def count(self) -> int:
        return int(self.session.scalar(select(func.count(ApiKeyRow.id))) or 0)

    def find(self, prefix: str) -> tuple[KeyRecord, str] | None:
        row = self.session.scalar(select(ApiKeyRow).where(ApiKeyRow.prefix == prefix))
        return None if row is None else (_record(row), row.key_hash)

    def name_taken(self, name: str) -> bool:
        return self.session.scalar(select(ApiKeyRow.id).where(ApiKeyRow.name == name)) is not None

    def insert(
        self,
        key: str,
        *,
        name: str,
        scopes: frozenset[str],
        collections: frozenset[str] | None = None,
        rate_limit: int | None = None,
    ) -> KeyRecord:
        name = check_name(name)
        scopes = parse_scopes(scopes)
        collections = check_collections(collections)
        if "admin" in scopes and collections is not None:
            raise InvalidInput("an admin key sees every collection: leave collections out")
        if rate_limit is not None and rate_limit < 0:
            raise InvalidInput("rate_limit is requests per minute: 0 (none) or more")
        if self.name_taken(name):
            raise Conflict(f"a key named {name!r} already exists")
        row = ApiKeyRow(
            name=name,
            prefix=prefix_of(key),
            key_hash=hash_key(key),
            scopes=",".join(s for s in SCOPES if s in scopes),
            collections=None if collections is None else ",".join(sorted(collections)),
            rate_limit=rate_limit,
        )
        self.session.add(row)
        try:
            self.session.flush()
        except IntegrityError as exc:  # a name or prefix written meanwhile (outside the write lock)
            raise Conflict(f"a key named {name!r} or with prefix {row.prefix} already exists") from exc
        return _record(row)


class KeyStore:
    """The `api_keys` table. Writes go through the store's serialised writer transaction."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @contextmanager
    def writing(self) -> Iterator[KeyTransaction]:
        """One write transaction, committed at the end (rolled back on an error). Writers are
        serialised across processes (SQLite's write lock, a PostgreSQL advisory lock), so what
        it reads holds until it commits."""
        with self.store._writer() as session:
            session.connection()  # take the write lock now (SQLite begins at the first statement)
            yield KeyTransaction(session)
            session.commit()

    def create(
        self,
        name: str,
        scopes: frozenset[str] | str,
        *,
        collections: frozenset[str] | list[str] | None = None,
        rate_limit: int | None = None,
    ) -> tuple[KeyRecord, str]:
        """A new random key: its record, and the key itself (shown once, never stored)."""
        wanted = parse_scopes(scopes) if isinstance(scopes, str) else scopes
        for _ in range(3):  # a 48-bit public part collides about never; retry if it does
            key = generate_key()
            with self.writing() as tx:
                if tx.find(prefix_of(key)) is not None:
                    continue
                record = tx.insert(
                    key,
                    name=name,
                    scopes=wanted,
                    collections=check_collections(list(collections) if collections is not None else None),
                    rate_limit=rate_limit,
                )
            return record, key
        raise RuntimeError("could not draw an unused key prefix")

    def register(
        self, key: str, name: str, scopes: frozenset[str], *, rate_limit: int | None = None
    ) -> tuple[KeyRecord, bool]:
        """A key given from outside (FACEID_ADMIN_KEY): stored once; (record, whether it was new)."""
        key = check_given_key(key)
        with self.writing() as tx:
            return register_in(tx, key, name, scopes, rate_limit=rate_limit)

    def list_keys(self) -> list[KeyRecord]:
        with self.store._sessions() as session:
            return [_record(r) for r in session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.id))]

    def get(self, key_id: int) -> KeyRecord:
        with self.store._sessions() as session:
            row = session.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFound(f"key {key_id} does not exist")
            return _record(row)

    def lookup(self, prefix: str) -> tuple[KeyRecord, str] | None:
        """The key with this public prefix and its stored hash (the caller compares the hashes)."""
        with self.store._sessions() as session:
            row = session.scalar(select(ApiKeyRow).where(ApiKeyRow.prefix == prefix))
            return None if row is None else (_record(row), row.key_hash)

    def revoke(self, key_id: int) -> KeyRecord:
        """Revoked keys stay listed (the audit log names them) and never work again. Idempotent."""
        with self.writing() as tx:
            row = tx.session.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFound(f"key {key_id} does not exist")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            tx.session.flush()
            return _record(row)

    def resolve(self, prefix_or_name: str) -> KeyRecord:
        """A key by its prefix (or the whole key), else by its name, else by its id."""
        wanted = prefix_of(prefix_or_name) if _KEY.fullmatch(prefix_or_name) else prefix_or_name
        with self.store._sessions() as session:
            row = session.scalar(select(ApiKeyRow).where(ApiKeyRow.prefix == wanted))
            if row is None:
                row = session.scalar(select(ApiKeyRow).where(ApiKeyRow.name == prefix_or_name))
            if row is None and prefix_or_name.isdigit():
                row = session.get(ApiKeyRow, int(prefix_or_name))
            if row is None:
                raise NotFound(f"no key has the prefix, name or id {prefix_or_name!r}")
            return _record(row)


def register_in(
    tx: KeyTransaction, key: str, name: str, scopes: frozenset[str], *, rate_limit: int | None = None
) -> tuple[KeyRecord, bool]:
    """Store a given key unless it is already there. A revoked key stays revoked."""
    found = tx.find(prefix_of(key))
    if found is not None:
        record, stored = found
        if not secrets.compare_digest(stored, hash_key(key)):
            raise Conflict(f"another key already has the prefix {record.prefix}")
        return record, False
    unique = name
    if tx.name_taken(unique):
        unique = f"{name}-{prefix_of(key)}"
    return tx.insert(key, name=unique, scopes=scopes, rate_limit=rate_limit), True
