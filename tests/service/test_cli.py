import shutil
from pathlib import Path

import pytest

from service.cli import main
from service.store import Store
from tests.conftest import ORL


def test_enroll_folder_enrolls_each_person_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    people = tmp_path / "people"
    for person in ("s1", "s2"):
        (people / person).mkdir(parents=True)
        for i in (1, 2, 3):
            shutil.copy(ORL / person / f"{i}.pgm", people / person / f"{i}.pgm")
    (people / "empty").mkdir()
    (people / "s2" / "notes.txt").write_text("not a photo")
    db = tmp_path / "faceid.db"
    monkeypatch.setenv("FACEID_DATABASE_URL", f"sqlite:///{db}")
    assert main(["enroll-folder", str(people)]) == 0
    assert main(["enroll-folder", str(people), "--skip-existing"]) == 0
    store = Store.from_url(f"sqlite:///{db}")
    items, total = store.list_identities(store.get_collection("default").id, limit=10, offset=0)
    assert total == 2
    assert sorted((i.external_id, i.faces) for i in items) == [("s1", 3), ("s2", 3)]
    store.close()


def test_enroll_folder_writes_each_person_whole_and_reruns_converge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Photos go in chunks of FACEID_MAX_IMAGES_PER_REQUEST; a chunk without a face once left the
    person half-stored and reported failed, and every rerun then hit 409."""
    import io

    from PIL import Image

    blank = io.BytesIO()
    Image.new("RGB", (200, 200), (128, 128, 128)).save(blank, "PNG")
    people = tmp_path / "people"
    (people / "s1").mkdir(parents=True)
    for i in (1, 2):
        shutil.copy(ORL / "s1" / f"{i}.pgm", people / "s1" / f"{i}.pgm")
    (people / "s1" / "3.png").write_bytes(blank.getvalue())  # the second chunk holds only this
    (people / "nobody").mkdir()
    (people / "nobody" / "1.png").write_bytes(blank.getvalue())
    db = tmp_path / "faceid.db"
    monkeypatch.setenv("FACEID_DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("FACEID_MAX_IMAGES_PER_REQUEST", "2")
    assert main(["enroll-folder", str(people)]) == 0
    assert "enrolled 1 people from 2 photos; 0 already enrolled; 1 failed" in capsys.readouterr().out
    assert main(["enroll-folder", str(people)]) == 0  # a rerun: nothing new, nothing broken
    assert "enrolled 0 people from 0 photos; 1 already enrolled; 1 failed" in capsys.readouterr().out
    store = Store.from_url(f"sqlite:///{db}")
    items, total = store.list_identities(store.get_collection("default").id, limit=10, offset=0)
    assert total == 1 and (items[0].external_id, items[0].faces) == ("s1", 2)
    assert store.count_faces_by_model() == {"sface@2021dec-int8bq": 2}
    store.close()


def test_migrate_waits_for_a_database_that_is_not_up_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from sqlalchemy.exc import OperationalError

    from service.store.migrate import wait_for_database

    store = Store.from_url("sqlite://")
    real_connect = store.engine.connect
    attempts = []

    def flaky() -> object:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise OperationalError("connect", {}, Exception("the database system is starting up"))
        return real_connect()

    monkeypatch.setattr(store.engine, "connect", flaky)
    wait_for_database(store.engine, timeout=10, first_delay=0.05)
    assert len(attempts) == 3 and attempts[2] - attempts[1] >= attempts[1] - attempts[0]  # backs off
    # A database that never comes up: the error once the time is spent, not a hang.
    unreachable = Store.from_url("postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=1")
    start = time.monotonic()
    with pytest.raises(OperationalError):
        wait_for_database(unreachable.engine, timeout=1.0, first_delay=0.2)
    assert 1.0 <= time.monotonic() - start < 8


def test_keys_create_prints_the_key_alone_last_and_it_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.auth import Authenticator, KeyStore, hash_key

    db = f"sqlite:///{tmp_path / 'faceid.db'}"
    monkeypatch.setenv("FACEID_DATABASE_URL", db)
    assert main(["keys", "create", "--name", "shop", "--scopes", "identify,enroll", "--collections", "a,b"]) == 0
    out = capsys.readouterr().out
    key = out.splitlines()[-1]
    assert out.endswith(key + "\n") and " " not in key and key.startswith("fid_")
    assert main(["keys", "create", "--name", "ops", "--scopes", "admin", "--rate-limit", "60"]) == 0
    admin = capsys.readouterr().out.splitlines()[-1]
    store = Store.from_url(db)
    auth = Authenticator(KeyStore(store))
    shop = auth.verify(key)
    assert (shop.name, shop.scopes, shop.collections) == ("shop", {"identify", "enroll"}, {"a", "b"})
    assert shop.can("enroll") and not shop.can("read") and shop.sees("a") and not shop.sees("c")
    ops = auth.verify(admin)
    assert ops.can("delete") and ops.rate_limit == 60 and ops.collections is None

    assert main(["keys", "list"]) == 0
    listed = capsys.readouterr().out
    assert "shop" in listed and "ops" in listed and key[:16] in listed and admin[:16] in listed
    for secret in (key, admin, key[17:], admin[17:], hash_key(key), hash_key(admin)):
        assert secret not in listed

    assert main(["keys", "create", "--name", "bad", "--scopes", "identify,root"]) == 1
    assert "unknown scopes ['root']" in capsys.readouterr().err
    assert main(["keys", "create", "--name", "shop", "--scopes", "read"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert [k.name for k in KeyStore(store).list_keys()] == ["shop", "ops"]
    store.close()


def test_keys_revoke_by_prefix_and_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.auth import Authenticator, KeyStore
    from service.errors import Unauthorized

    db = f"sqlite:///{tmp_path / 'faceid.db'}"
    monkeypatch.setenv("FACEID_DATABASE_URL", db)
    made = {}
    for name in ("one", "two", "three"):
        assert main(["keys", "create", "--name", name, "--scopes", "read"]) == 0
        made[name] = capsys.readouterr().out.splitlines()[-1]
    assert main(["keys", "revoke", made["one"][:16]]) == 0  # the prefix
    assert "revoked key 1 'one'" in capsys.readouterr().out
    assert main(["keys", "revoke", "two"]) == 0  # the name
    assert "revoked key 2 'two'" in capsys.readouterr().out
    assert main(["keys", "revoke", "nobody"]) == 1
    assert "no key has the prefix, name or id 'nobody'" in capsys.readouterr().err
    store = Store.from_url(db)
    auth = Authenticator(KeyStore(store), cache_seconds=0)
    for name in ("one", "two"):
        with pytest.raises(Unauthorized, match="revoked"):
            auth.verify(made[name])
    assert auth.verify(made["three"]).name == "three"
    assert main(["keys", "list"]) == 0
    rows = {line.split()[2]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "revoked" in rows["one"] and "revoked" in rows["two"] and rows["three"].endswith("active")
    store.close()
