"""No key reaches a log line: uvicorn's access log (a real server) and ours, at DEBUG."""

from __future__ import annotations

import logging
import threading
import time

import httpx
import pytest
import uvicorn

from service.auth import Authenticator, KeyStore, RateLimiter
from tests.service.auth.conftest import tiny_app


def test_keys_never_reach_a_log_line(keys: KeyStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    _, key = keys.create("app", "identify", rate_limit=1)
    _, revoked = keys.create("old", "identify")
    keys.revoke(keys.resolve("old").id)
    app = tiny_app(Authenticator(keys, limiter=RateLimiter(0)))
    # log_config=None: uvicorn's loggers propagate to the root, where caplog listens.
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, log_level="debug"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        statuses = [
            httpx.post(f"{base}/identify", headers={"Authorization": f"Bearer {key}"}).status_code,
            httpx.post(f"{base}/identify", headers={"X-API-Key": key}).status_code,  # over its rate: 429
            httpx.get(f"{base}/audit", headers={"X-API-Key": key}).status_code,  # no scope: 403
            httpx.post(f"{base}/identify", headers={"X-API-Key": revoked}).status_code,
            httpx.post(f"{base}/identify", headers={"X-API-Key": key[:-3] + "zzz"}).status_code,
        ]
    finally:
        server.should_exit = True
        thread.join(10)
    assert statuses == [200, 429, 403, 401, 401]
    access = [r for r in caplog.records if r.name == "uvicorn.access"]
    assert len(access) == 5  # the access log is on, so the check below can fail
    lines = [r.getMessage() for r in caplog.records] + [caplog.text]
    for secret in (key, key[17:], key[17:37], revoked, revoked[17:], key[:-3] + "zzz"):
        assert not any(secret in line for line in lines), secret
