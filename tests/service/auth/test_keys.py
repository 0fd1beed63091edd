"""Keys: format, entropy, hashing, the table, and what a database dump would give away."""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import text

from service.auth import KeyStore, generate_key, hash_key, prefix_of
from service.auth.keys import check_given_key
from service.errors import Conflict, InvalidInput, NotFound
from service.store import Store


def test_generated_keys_have_the_format_and_256_random_bits() -> None:
    keys = [generate_key() for _ in range(2000)]
    assert len(set(keys)) == len(keys)
    for key in keys[:50]:
        assert re.fullmatch(r"fid_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", key), key
        assert prefix_of(key) == key[:16]
    # The secret part: 43 url-safe base64 characters = 258 bits of which 256 are random.
    # Every character of the alphabet turns up about equally often in every position.
    secrets_ = [k[17:] for k in keys]
    counts = Counter(c for s in secrets_ for c in s[:42])  # the last character carries only 4 bits
    assert len(counts) == 64
    expected = 2000 * 42 / 64
    chi2 = sum((n - expected) ** 2 / expected for n in counts.values())
    assert chi2 < 120, chi2  # 63 degrees of freedom: p < 1e-5 beyond ~120
    assert 43 * math.log2(64) >= 256


def test_hash_is_sha256_of_the_whole_key() -> None:
    key = generate_key()
    assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert hash_key(key) != hash_key(key[:-1] + ("A" if key[-1] != "A" else "B"))


def test_given_keys_have_a_derived_prefix_and_a_minimum_length() -> None:
    given = "0123456789abcdef" * 4
    assert check_given_key(f"  {given}\n") == given
    assert prefix_of(given) == "ext_" + hash_key(given)[:12]
    for bad in ("short", "x" * 31, "has space " * 4, "é" * 40, "x" * 257):
        with pytest.raises(ValueError, match="visible ASCII"):
            check_given_key(bad)


def test_create_list_revoke(store: Store) -> None:
    keys = KeyStore(store)
    record, key = keys.create("app", "identify,enroll", collections=["shop", "staff"], rate_limit=60)
    assert record.prefix == prefix_of(key)
    assert record.scopes == {"identify", "enroll"} and record.collections == {"shop", "staff"}
    assert record.rate_limit == 60 and record.active
    admin, _ = keys.create("ops", "admin")
    assert admin.collections is None
    assert [k.name for k in keys.list_keys()] == ["app", "ops"]
    found = keys.lookup(record.prefix)
    assert found is not None and found[0] == record and found[1] == hash_key(key)
    assert keys.lookup("fid_000000000000") is None
    assert keys.resolve(record.prefix) == record == keys.resolve("app") == keys.resolve(key)
    assert keys.resolve(str(admin.id)) == admin
    revoked = keys.revoke(record.id)
    assert revoked.revoked_at is not None and not revoked.active
    assert keys.revoke(record.id).revoked_at == revoked.revoked_at  # idempotent
    with pytest.raises(NotFound):
        keys.revoke(999)
    with pytest.raises(NotFound):
        keys.resolve("nobody")


def test_bad_keys_are_refused(store: Store) -> None:
    keys = KeyStore(store)
    keys.create("app", "read")
    with pytest.raises(Conflict):
        keys.create("app", "read")
    with pytest.raises(ValueError, match="unknown scopes"):
        keys.create("x", "read,superuser")
    with pytest.raises(ValueError, match="at least one scope"):
        keys.create("x", "")
    with pytest.raises(InvalidInput, match="admin key sees every collection"):
        keys.create("x", "admin", collections=["a"])
    with pytest.raises(InvalidInput, match="collections"):
        keys.create("x", "read", collections=[])
    with pytest.raises(InvalidInput, match="name"):
        keys.create("bad\x00name", "read")
    assert [k.name for k in keys.list_keys()] == ["app"]


def test_register_is_idempotent_and_keeps_a_revoked_key_revoked(store: Store) -> None:
    keys = KeyStore(store)
    given = "given-admin-key-" + "7" * 32
    first, new = keys.register(given, "admin", frozenset({"admin"}))
    assert new and first.scopes == {"admin"} and first.prefix.startswith("ext_")
    again, new = keys.register(given, "admin", frozenset({"admin"}))
    assert not new and again == first
    keys.revoke(first.id)
    after, new = keys.register(given, "admin", frozenset({"admin"}))
    assert not new and not after.active
    other, new = keys.register("another-given-key-" + "8" * 32, "admin", frozenset({"admin"}))
    assert new and other.name == f"admin-{other.prefix}"


def test_a_database_dump_holds_no_usable_key(sqlite_store: Store) -> None:
    keys = KeyStore(sqlite_store)
    _, key = keys.create("app", "identify")
    secret = key.split("_", 2)[2]
    with sqlite_store.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM api_keys")).all()
        dump = "\n".join(conn.connection.dbapi_connection.iterdump())  # type: ignore[union-attr]
    assert rows and key not in repr(rows) and secret not in repr(rows)
    assert key not in dump and secret not in dump
    assert hash_key(key) in dump  # what is stored instead
    sqlite_store.close()
    path = Path(str(sqlite_store.engine.url.database))
    data = b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    assert secret.encode() not in data and key.encode() not in data
