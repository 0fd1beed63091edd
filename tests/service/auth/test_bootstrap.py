"""The first admin key: written once to a 0600 file, or registered from FACEID_ADMIN_KEY(_FILE)."""

from __future__ import annotations

import logging
import stat
import threading
from pathlib import Path

import pytest

from service.auth import Authenticator, KeyStore
from service.auth.bootstrap import AdminKeyError, bootstrap_admin_key
from service.settings import Settings
from service.store import Store
from service.store.migrate import upgrade


def settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(admin_key_file=tmp_path / "secrets" / "admin.key", **overrides)  # type: ignore[arg-type]


def test_first_start_writes_a_0600_admin_key_and_logs_only_its_path(
    keys: KeyStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    result = bootstrap_admin_key(keys, settings(tmp_path))
    path = tmp_path / "secrets" / "admin.key"
    assert result.outcome == "created" and result.path == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_text().strip()
    assert Authenticator(keys).verify(key).can("admin")
    assert [(k.name, k.scopes) for k in keys.list_keys()] == [("admin", {"admin"})]
    assert str(path) in caplog.text and key not in caplog.text and key.split("_", 2)[2] not in caplog.text
    # Later starts: the file's key is the registered one; nothing new, nothing rewritten.
    before = path.stat().st_mtime_ns
    assert bootstrap_admin_key(keys, settings(tmp_path)).outcome == "known"
    path.unlink()
    assert bootstrap_admin_key(keys, settings(tmp_path)).outcome == "exists"
    assert not path.exists() and len(keys.list_keys()) == 1
    assert before


def test_an_existing_file_is_never_overwritten(keys: KeyStore, tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "admin.key"
    path.parent.mkdir()
    path.write_text("")
    with pytest.raises(AdminKeyError, match="is empty"):
        bootstrap_admin_key(keys, settings(tmp_path))
    assert path.read_text() == "" and keys.list_keys() == []
    path.write_text("too-short")
    with pytest.raises(AdminKeyError, match="32 to 256"):
        bootstrap_admin_key(keys, settings(tmp_path))
    assert path.read_text() == "too-short" and keys.list_keys() == []


def test_an_unwritable_place_is_a_clear_start_up_error(keys: KeyStore, tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file, not a folder")
    with pytest.raises(AdminKeyError, match="cannot be written"):
        bootstrap_admin_key(keys, Settings(admin_key_file=blocked / "admin.key"))
    assert keys.list_keys() == []


def test_faceid_admin_key_registers_that_key_once(
    keys: KeyStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = "compose-secret-" + "a1" * 20
    monkeypatch.setenv("FACEID_ADMIN_KEY", given)
    first = bootstrap_admin_key(keys, settings(tmp_path))
    assert first.outcome == "registered" and first.key is not None and first.key.name == "admin"
    assert bootstrap_admin_key(keys, settings(tmp_path)).outcome == "known"
    assert len(keys.list_keys()) == 1 and not (tmp_path / "secrets").exists()  # no file written
    assert Authenticator(keys).verify(given).can("admin")
    monkeypatch.setenv("FACEID_ADMIN_KEY", "short")
    with pytest.raises(AdminKeyError, match="FACEID_ADMIN_KEY: a given API key") as error:
        bootstrap_admin_key(keys, settings(tmp_path))
    assert "short" not in str(error.value)


def test_an_admin_key_file_registers_its_key_even_when_other_keys_exist(keys: KeyStore, tmp_path: Path) -> None:
    keys.create("app", "identify")
    path = tmp_path / "run" / "secrets" / "faceid_admin_key"
    path.parent.mkdir(parents=True)
    given = "docker-secret-" + "b2" * 20
    path.write_text(given + "\n")
    result = bootstrap_admin_key(keys, Settings(admin_key_file=path))
    assert result.outcome == "registered" and result.path == path
    assert path.read_text() == given + "\n"
    assert Authenticator(keys).verify(given).can("admin")
    assert bootstrap_admin_key(keys, Settings(admin_key_file=path)).outcome == "known"
    assert sorted(k.name for k in keys.list_keys()) == ["admin", "app"]


def test_auth_off_makes_no_key(keys: KeyStore, tmp_path: Path) -> None:
    assert bootstrap_admin_key(keys, settings(tmp_path, auth=False)).outcome == "disabled"
    assert keys.list_keys() == [] and not (tmp_path / "secrets").exists()


def test_concurrent_first_starts_make_one_admin_key(db_url: str, tmp_path: Path) -> None:
    """Workers and replicas start together: each has its own connection; one key comes out."""
    first = Store.from_url(db_url)
    upgrade(first.engine)
    stores = [first] + [Store.from_url(db_url) for _ in range(3)]
    barrier = threading.Barrier(len(stores))
    outcomes: list[str] = []
    errors: list[BaseException] = []

    def start(store: Store) -> None:
        try:
            barrier.wait()
            outcomes.append(bootstrap_admin_key(KeyStore(store), settings(tmp_path)).outcome)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(outcomes) == ["created", "known", "known", "known"]
    listed = KeyStore(first).list_keys()
    assert [k.name for k in listed] == ["admin"]
    key = (tmp_path / "secrets" / "admin.key").read_text().strip()
    assert Authenticator(KeyStore(first)).verify(key).key_id == listed[0].id
    for store in stores:
        store.close()
