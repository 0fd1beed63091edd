"""The `db` healthcheck of docker-compose.yml, run as written against a real PostgreSQL
server in the two states the postgres image goes through on a fresh volume.

The image's entrypoint first starts a temporary server for initialisation with
`listen_addresses=''` (Unix socket only), then stops it and starts the real one on TCP.
`pg_isready` on the socket calls the temporary one ready, so `migrate` would start
against a server about to go away. The healthcheck must fail then and pass only once
the server listens on TCP.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)
needs_postgres = pytest.mark.skipif(
    BIN is None or os.geteuid() != 0 or shutil.which("runuser") is None,
    reason="needs the PostgreSQL server binaries and root (to run them as the postgres user)",
)


def healthcheck(port: int) -> list[str]:
    """The compose file's healthcheck command, pointed at the test server's port."""
    test = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["db"]["healthcheck"]["test"]
    command = list(test[1:]) if test[0] == "CMD" else ["sh", "-c", test[1]]
    assert command[0] == "pg_isready" and command[command.index("-p") + 1] == "5432"
    command[command.index("-p") + 1] = str(port)
    return command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, work: Path, port: int) -> None:
        self.work, self.port, self.data = work, port, work / "data"

    def as_postgres(self, *command: str, timeout: float = 120) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True, capture_output=True, timeout=timeout)

    def start(self, listen: str) -> None:
        self.as_postgres(
            str(BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-w",
            "-l",
            str(self.work / "log"),
            "-o",
            f"-p {self.port} -k {self.work} -c listen_addresses='{listen}'",
            "start",
        )

    def stop(self) -> None:
        self.as_postgres(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")


@pytest.fixture
def server() -> Iterator[Server]:
    assert BIN is not None
    with tempfile.TemporaryDirectory() as work:  # the postgres user must reach it
        shutil.chown(work, "postgres", "postgres")
        server = Server(Path(work), free_port())
        server.as_postgres(str(BIN / "initdb"), "-D", str(server.data), "-U", "faceid", "-A", "trust", "--no-sync")
        try:
            yield server
        finally:
            if (server.data / "postmaster.pid").exists():
                server.stop()


@needs_postgres
def test_healthcheck_waits_for_the_server_on_tcp(server: Server) -> None:
    command = healthcheck(server.port)

    server.start(listen="")  # as the entrypoint's initialisation server
    socket_check = ["pg_isready", "-h", str(server.work), "-p", str(server.port), "-U", "faceid", "-d", "postgres"]
    assert subprocess.run(socket_check, capture_output=True, timeout=30).returncode == 0, "the server is up"
    early = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert early.returncode != 0, f"healthy while only the socket answers: {early.stdout}"
    server.stop()

    server.start(listen="127.0.0.1")  # the real server
    deadline = time.monotonic() + 30
    while (ready := subprocess.run(command, capture_output=True, text=True, timeout=30)).returncode != 0:
        assert time.monotonic() < deadline, ready.stdout + ready.stderr
        time.sleep(0.2)
