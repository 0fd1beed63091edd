import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_a_misspelt_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEID_TRESHOLD", "0.3")
    with pytest.raises(ValidationError, match="FACEID_TRESHOLD"):
        Settings()


def test_variables_are_read_and_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEID_PROVIDERS", "CUDAExecutionProvider, CPUExecutionProvider")
    monkeypatch.setenv("FACEID_TARGET_FPIR", "0.05")
    settings = Settings()
    assert settings.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert settings.target_fpir == 0.05
    monkeypatch.setenv("FACEID_TARGET_FPIR", "2")
    with pytest.raises(ValidationError):
        Settings()


def test_other_tools_variables_in_dotenv_are_ignored(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("POSTGRES_PASSWORD=secret\nFACEID_PORT=9001\n")
    assert Settings().port == 9001
    (tmp_path / ".env").write_text("FACEID_PROT=9001\n")
    with pytest.raises(ValidationError, match="FACEID_PROT"):
        Settings()


@pytest.mark.parametrize(
    ("url", "says"),
    [("", "not a database URL"), ("faceid.db", "not a database URL"), ("mysql://u:hunter2@h/db", "mysql")],
)
def test_a_database_url_that_cannot_work_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, url: str, says: str
) -> None:
    monkeypatch.setenv("FACEID_DATABASE_URL", url)
    with pytest.raises(ValidationError, match=says) as caught:
        Settings()
    assert "hunter2" not in str(caught.value)
    monkeypatch.setenv("FACEID_DATABASE_URL", "postgresql+psycopg://u:hunter2@db.example/faceid")
    assert Settings().database_url.endswith("/faceid")
