"""The first admin key, at start-up.

- FACEID_ADMIN_KEY, or FACEID_ADMIN_KEY_FILE when that file exists and is not empty (the
  Docker secrets way): that key is registered as an admin key, once (a revoked one stays
  revoked).
- Otherwise, when no key exists at all (the first start): a new admin key is written to
  FACEID_ADMIN_KEY_FILE (created, mode 0600, never overwritten) and its hash stored. The log
  names the file, never the key.

All of it happens in one serialised write transaction, so workers and replicas that start
together make one admin key between them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from service.auth.keys import KeyRecord, KeyStore, check_given_key, generate_key, register_in
from service.settings import Settings

log = logging.getLogger(__name__)

ADMIN = frozenset({"admin"})
Outcome = Literal["disabled", "exists", "created", "registered", "known"]


@dataclass(frozen=True)
class Bootstrap:
    """What start-up did about the admin key. `path`: where the key is, when it is in a file."""

    outcome: Outcome
    key: KeyRecord | None = None
    path: Path | None = None


class AdminKeyError(RuntimeError):
    """The admin key cannot be read or written: a start-up error that says what to do."""


def _read_given(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise AdminKeyError(f"FACEID_ADMIN_KEY_FILE {path} cannot be read: {type(exc).__name__}") from exc
    if not text:
        return None
    try:
        return check_given_key(text)
    except ValueError as exc:
        raise AdminKeyError(f"FACEID_ADMIN_KEY_FILE {path}: {exc}") from exc


def _write_new(path: Path, key: str) -> None:
    """Create the file with the key, readable by this user only; never replace an existing one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, (key + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def bootstrap_admin_key(keys: KeyStore, settings: Settings) -> Bootstrap:
    if not settings.auth:
        log.warning(
            "FACEID_AUTH=false: every request is allowed without a key, bound to %s only; for local experiments only",
            settings.host,
        )
        return Bootstrap("disabled")
    path = settings.admin_key_file.expanduser().absolute()
    with keys.writing() as tx:
        if settings.admin_key is not None:
            try:
                given: str | None = check_given_key(settings.admin_key.get_secret_value())
            except ValueError as exc:
                raise AdminKeyError(f"FACEID_ADMIN_KEY: {exc}") from exc
            source, where = "FACEID_ADMIN_KEY", None
        else:
            given = _read_given(path)
            source, where = str(path), path
        if given is not None:
            record, new = register_in(tx, given, "admin", ADMIN)
            if new:
                log.info("registered the admin API key from %s (prefix %s)", source, record.prefix)
            elif not record.active:
                log.warning(
                    "the admin API key from %s (prefix %s) was revoked: it stays revoked", source, record.prefix
                )
            return Bootstrap("registered" if new else "known", record, where)
        if tx.count() > 0:
            return Bootstrap("exists", path=path if path.is_file() else None)
        if path.exists():  # there, but empty (a key in it was registered above): never overwritten
            raise AdminKeyError(
                f"no API key exists and {path} is empty: put a key in it, set FACEID_ADMIN_KEY, or create one "
                "with `faceid keys create --name admin --scopes admin`"
            )
        key = generate_key()
        try:
            _write_new(path, key)
        except OSError as exc:
            raise AdminKeyError(
                f"no API key exists and the first admin key cannot be written to {path} ({exc.strerror}): set "
                "FACEID_ADMIN_KEY_FILE to a writable path or FACEID_ADMIN_KEY to a key"
            ) from exc
        record = tx.insert(key, name="admin", scopes=ADMIN)
    log.warning(
        "first start: created the admin API key (prefix %s); it is in %s (mode 0600) and shown nowhere else",
        record.prefix,
        path,
    )
    return Bootstrap("created", record, path)
