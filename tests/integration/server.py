"""Start and stop a real `faceid serve` process on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Every test server registers this admin key (FACEID_ADMIN_KEY, as compose does); clients send AUTH.
ADMIN_KEY = "test-admin-key-for-the-suite-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


class Server:
    def __init__(self, database_url: str, log: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "FACEID_DATABASE_URL": database_url,
            "FACEID_PORT": str(self.port),
            "FACEID_PROVIDERS": "CPUExecutionProvider",
            "FACEID_ADMIN_KEY": ADMIN_KEY,
            "FACEID_ADMIN_KEY_FILE": str(log.with_suffix(".admin.key")),
            # Every client shares the one admin key: on a quiet machine the load tests pass the
            # default 1,200 requests a minute. A test about rate limits sets its own.
            "FACEID_RATE_LIMIT_PER_MINUTE": "0",
            **env,
        }
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> Server:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve"],
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"server not ready in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
