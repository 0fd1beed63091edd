"""The compose files: valid for Compose (checked offline with docker-compose 1.29, as CI
installs it), and saying what the deployment needs: the GPU reserved and required (ONNX
Runtime and FAISS), the database healthy over TCP and migrated before the service starts,
bounded restarts, settings the service actually reads, passwords only from secret files."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "docker-compose.yml"
CPU = ROOT / "docker-compose.cpu.yml"
COMPOSE = shutil.which("docker-compose")
needs_compose = pytest.mark.skipif(COMPOSE is None, reason="docker-compose is not installed (.ci/run installs it)")
GPU_SETTINGS = {"FACEID_REQUIRE_GPU", "FACEID_PROVIDERS", "FACEID_GALLERY_DEVICE"}
PASSWORD_SECRET = "/run/secrets/postgres_password"


def compose(
    *files: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ("config",)
) -> subprocess.CompletedProcess[str]:
    assert COMPOSE is not None
    empty = ROOT / "docker" / "constraints.txt"  # any file without assignments: no .env is read
    command = [COMPOSE, "--env-file", str(empty)]
    for f in files:
        command += ["-f", str(f)]
    return subprocess.run(
        [*command, *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def resolved(*files: Path) -> dict[str, Any]:
    result = compose(*files)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def mounts(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """target -> {source, read_only, named}: long syntax (Compose 2) or `src:dst[:mode]` (1.29)."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, str):
            source, target, *mode = v.split(":")
            v = {
                "source": source,
                "target": target,
                "read_only": mode == ["ro"],
                "type": "bind" if "/" in source else "volume",
            }
        out[v["target"]] = {
            "source": v["source"],
            "read_only": bool(v.get("read_only")),
            "named": v["type"] == "volume",
        }
    return out


def active(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services a plain `up` starts (no profile)."""
    return {name: s for name, s in config["services"].items() if not s.get("profiles")}


def restart_bound(policy: str) -> int:
    """N of `on-failure:N`; any other policy fails the test."""
    match = re.fullmatch(r"on-failure:(\d+)", policy)
    assert match, f"restart: {policy} (a start-up error must stop after a bounded number of tries)"
    return int(match[1])


def secrets(service: dict[str, Any]) -> set[str]:
    return {s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])}


@needs_compose
@pytest.mark.parametrize("files", [(BASE,), (BASE, CPU)], ids=["gpu", "cpu"])
def test_validates(files: tuple[Path, ...]) -> None:
    result = compose(*files, args=("config", "-q"))
    assert result.returncode == 0, result.stderr


def test_passwords_come_only_from_secret_files() -> None:
    for path in (BASE, CPU):
        for line in path.read_text().splitlines():
            if re.search(r"(PASSWORD|KEY)\w*\s*:", line):
                assert re.search(r"_FILE:\s*/run/secrets/\w+\s*$", line), f"{path.name}: {line.strip()}"
            assert not re.search(r"postgres(ql)?(\+\w+)?://[^@/\s]*:[^@/\s]*@", line), "a password in a URL"
            assert "${POSTGRES_PASSWORD" not in line


@needs_compose
@pytest.mark.parametrize("files", [(BASE,), (BASE, CPU)], ids=["gpu", "cpu"])
def test_database_password_is_one_secret_for_postgres_and_the_service(files: tuple[Path, ...]) -> None:
    config = resolved(*files)
    assert config["secrets"]["postgres_password"]["file"] == str(ROOT / "secrets" / "postgres_password")
    db = config["services"]["db"]
    assert db["environment"]["POSTGRES_PASSWORD_FILE"] == PASSWORD_SECRET
    assert "postgres_password" in secrets(db)
    for name, service in active(config).items():
        if name == "db":
            continue
        env = service["environment"]
        assert env["PGPASSWORD_FILE"] == PASSWORD_SECRET and "postgres_password" in secrets(service), name
        assert not {k for k in env if "PASSWORD" in k} - {"PGPASSWORD_FILE"}, name
    # The secrets directory never reaches git.
    assert "/secrets/" in (ROOT / ".gitignore").read_text().splitlines()


@needs_compose
def test_gpu_service_reserves_and_requires_the_gpu_and_waits_for_a_migrated_database() -> None:
    config = resolved(BASE)
    services = active(config)
    assert set(services) == {"db", "migrate", "faceid"}
    faceid = services["faceid"]
    devices = faceid["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    env = faceid["environment"]
    assert env["FACEID_REQUIRE_GPU"] == "true"
    assert env["FACEID_GALLERY_DEVICE"] == "cuda", "auto would fall back to a CPU gallery without a word"
    assert env["FACEID_AUTO_MIGRATE"] == "false"
    assert env["FACEID_ADMIN_KEY_FILE"] == "/run/secrets/faceid_admin_key"
    assert "faceid_admin_key" in secrets(faceid) and "faceid_admin_key" in config["secrets"]
    assert faceid["build"]["target"] == "gpu"
    assert faceid["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    assert 1 <= restart_bound(faceid["restart"]) <= 10

    migrate = services["migrate"]
    assert migrate["command"] == ["migrate"]
    assert 1 <= restart_bound(migrate["restart"]) <= 10
    assert migrate["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert migrate["environment"]["FACEID_DATABASE_URL"] == env["FACEID_DATABASE_URL"]
    assert "FACEID_ADMIN_KEY_FILE" not in migrate["environment"]


@needs_compose
def test_database_healthcheck_asks_over_tcp() -> None:
    """pg_isready without -h asks on the Unix socket, where the entrypoint's temporary
    initialisation server answers on a fresh volume before the real one listens."""
    test = resolved(BASE)["services"]["db"]["healthcheck"]["test"]
    command = test[1:] if test[0] == "CMD" else test[1].split()
    assert command[0] == "pg_isready"
    assert command[command.index("-h") + 1] in ("127.0.0.1", "localhost")
    assert command[command.index("-U") + 1] == "faceid" and command[command.index("-d") + 1] == "faceid"


@needs_compose
def test_models_are_mounted_read_only() -> None:
    assert mounts(resolved(BASE)["services"]["faceid"])["/models"] == {
        "source": str(ROOT / "models"),
        "read_only": True,
        "named": False,
    }


@needs_compose
def test_cpu_override_reserves_nothing_and_serves_the_same_settings() -> None:
    services = active(resolved(BASE, CPU))
    assert set(services) == {"db", "migrate", "faceid-cpu"}
    for name, service in services.items():
        assert not service.get("deploy", {}).get("resources", {}).get("reservations"), name
    gpu, cpu = resolved(BASE)["services"]["faceid"], services["faceid-cpu"]
    assert cpu["build"]["target"] == services["migrate"]["build"]["target"] == "cpu"
    assert cpu["environment"]["FACEID_REQUIRE_GPU"] == "false"
    same = {k: v for k, v in gpu["environment"].items() if k not in GPU_SETTINGS}
    assert {k: v for k, v in cpu["environment"].items() if k not in GPU_SETTINGS} == same
    for key in ("command", "depends_on", "ports", "volumes", "restart"):
        assert cpu[key] == gpu[key], key
    assert secrets(cpu) == secrets(gpu)


@needs_compose
@pytest.mark.parametrize("files", [(BASE,), (BASE, CPU)], ids=["gpu", "cpu"])
def test_every_faceid_variable_is_a_valid_setting(
    files: tuple[Path, ...], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fields = {f"FACEID_{name.upper()}" for name in Settings.model_fields}
    secret = tmp_path / "secret"
    secret.write_text("0123456789abcdef" * 4 + "\n")  # as `openssl rand -hex 32` writes
    for name, service in resolved(*files)["services"].items():
        env = {k: str(v) for k, v in (service.get("environment") or {}).items() if k.startswith("FACEID_")}
        # Secret files exist only in the container: a stand-in file with the same role.
        env = {k: str(secret) if v.startswith("/run/secrets/") else v for k, v in env.items()}
        assert set(env) <= fields, (name, set(env) - fields)
        for key in list(Settings.model_fields):
            monkeypatch.delenv(f"FACEID_{key.upper()}", raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        Settings(_env_file=None)  # type: ignore[call-arg]  # values parse and pass validation


def test_raw_files_name_only_settings() -> None:
    """The raw files, read without Compose, name only FACEID_ variables Settings knows (an
    unknown one is a start-up error for the service)."""
    fields = {f"FACEID_{name.upper()}" for name in Settings.model_fields}
    named = set()
    for path in (BASE, CPU):
        named |= set(re.findall(r"^\s+(FACEID_[A-Z_]+):", path.read_text(), re.MULTILINE))
        # Interpolated from the operator's environment, where `faceid` would read them too.
        named |= set(re.findall(r"\$\{(FACEID_[A-Z_]+)", path.read_text()))
    assert named and named <= fields, named - fields
    assert "FACEID_NOT_A_SETTING" not in fields
