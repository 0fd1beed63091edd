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
    items, total = store.list_identities(limit=10, offset=0)
    assert total == 2
    assert sorted((i.external_id, i.faces) for i in items) == [("s1", 3), ("s2", 3)]
    store.close()
