from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import Settings


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_auth_off_is_allowed_on_loopback(host: str) -> None:
    assert Settings(auth=False, host=host).auth is False


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "faceid.example.com", ""])
def test_auth_off_is_refused_on_any_other_host(host: str) -> None:
    with pytest.raises(ValidationError, match=r"FACEID_AUTH=false .* loopback address"):
        Settings(auth=False, host=host)


def test_auth_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEID_ADMIN_KEY", "s3cret-" + "k" * 40)
    monkeypatch.setenv("FACEID_RATE_LIMIT_PER_MINUTE", "0")
    monkeypatch.setenv("FACEID_AUTH_CACHE_SECONDS", "0.25")
    monkeypatch.setenv("FACEID_METRICS_REQUIRE_KEY", "true")
    settings = Settings(host="0.0.0.0")
    assert settings.auth and settings.rate_limit_per_minute == 0 and settings.metrics_require_key
    assert settings.auth_cache_seconds == 0.25
    assert settings.admin_key is not None and "kkkk" not in repr(settings) and "kkkk" not in str(settings.admin_key)
    monkeypatch.setenv("FACEID_AUTH_CACHE_SECONDS", "5")
    with pytest.raises(ValidationError, match="auth_cache_seconds"):
        Settings()  # a revoked key must stop within 1 s


def test_settings_errors_never_echo_the_admin_key(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "do-not-print-me-" + "q7" * 20
    monkeypatch.setenv("FACEID_ADMIN_KEY", secret)
    monkeypatch.setenv("FACEID_AUTH", "false")
    with pytest.raises(ValidationError) as error:
        Settings(host="0.0.0.0")
    text = str(error.value)
    assert "loopback" in text and not any(secret[i : i + 4] in text for i in range(len(secret) - 4))


def test_faceid_serve_refuses_auth_off_on_a_public_host(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.cli import main

    monkeypatch.setenv("FACEID_AUTH", "false")
    assert main(["serve", "--host", "0.0.0.0"]) == 2  # refused before anything binds
    err = capsys.readouterr().err
    assert "FACEID_AUTH=false" in err and "loopback" in err and "Traceback" not in err
