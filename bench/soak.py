"""Soak: mixed traffic on a real server for a set time, watching for leaks and drift (issue 12).

A gallery of `--faces` synthetic faces is written straight into a fresh database (as bench.startup
does), a real `faceid serve` starts on it, and `--concurrency` clients send identify 80%, enroll 15%
and delete 5% (of the identities the soak enrolled) until `--minutes` have passed. Every
`--sample-seconds` (60 by default) it samples the server's RSS, open file descriptors and database
connections, and the p50/p99 latency of the window. At the end the gallery must agree with the
database (/ready: in_sync, gallery size = searchable faces in the database).

    python -m bench.soak --database sqlite --minutes 30 --publish
    python -m bench.soak --database postgresql --minutes 30 --publish

Goals (issue 12): no errors but the 429/503 a test provokes; RSS growth from minute 5 to the end
<= 5%; p99 of the last 5 minutes <= 1.2x the p99 of minutes 5-10. A run shorter than 15 minutes
scales those windows (a third of the run for warm-up, the next third and the last third) and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.common import OUT, report_written
from bench.startup import POSTGRES, fill_postgres, fill_sqlite, free_port
from service.store import Store
from service.store.migrate import upgrade

REPO = Path(__file__).resolve().parents[1]
ORL = REPO / "tests" / "fixtures" / "orl"
KEY = "soak-admin-key-" + "0123456789abcdef" * 2
AUTH = {"Authorization": f"Bearer {KEY}"}
MIX = (("identify", 0.80), ("enroll", 0.15), ("delete", 0.05))
EXPECTED = {"identify": {200}, "enroll": {201}, "delete": {204}}
PROVOKED = {429, 503}  # refusals a load test may provoke (rate limit, overload): counted, not errors


@dataclass
class Tally:
    latencies: list[tuple[float, str, float]] = field(default_factory=list)  # (when, op, seconds)
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    enrolled: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def photos() -> list[bytes]:
    return [(ORL / f"s{p}" / f"{k}.pgm").read_bytes() for p in range(1, 11) for k in range(1, 11)]


def client(url: str, stop: threading.Event, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    images = photos()
    ops, weights = [op for op, _ in MIX], [w for _, w in MIX]
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as http:
        while not stop.is_set():
            op = rng.choices(ops, weights)[0]
            with tally.lock:
                victim = (
                    tally.enrolled.pop(rng.randrange(len(tally.enrolled)))
                    if op == "delete" and tally.enrolled
                    else None
                )
            if op == "delete" and victim is None:
                op = "identify"
            start = time.monotonic()
            try:
                if op == "identify":
                    r = http.post(
                        "/identify", files={"image": ("p.pgm", rng.choice(images), "image/x-portable-graymap")}
                    )
                elif op == "enroll":
                    r = http.post(
                        "/enroll",
                        data={"name": f"soak-{uuid.uuid4().hex[:8]}", "allow_conflict": "true"},
                        files={"images": ("p.pgm", rng.choice(images), "image/x-portable-graymap")},
                    )
                else:
                    r = http.delete(f"/identities/{victim}")
            except httpx.HTTPError as exc:
                with tally.lock:
                    tally.errors.append(f"{op}: {type(exc).__name__}")
                continue
            took = time.monotonic() - start
            with tally.lock:
                tally.latencies.append((time.monotonic(), op, took))
                counts = tally.statuses.setdefault(op, {})
                counts[r.status_code] = counts.get(r.status_code, 0) + 1
                if r.status_code not in EXPECTED[op] | PROVOKED:
                    tally.errors.append(f"{op}: {r.status_code} {r.text[:200]}")
                if op == "enroll" and r.status_code == 201:
                    tally.enrolled.append(r.json()["identity"]["id"])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fds(pid: int) -> tuple[int, int]:
    """Open descriptors, and those on the SQLite files (its connections)."""
    names = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            names.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return len(names), sum(1 for n in names if n.endswith(".db"))


def postgres_connections(admin_url: str, database: str) -> int:
    engine = create_engine(admin_url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d"), {"d": database}).scalar()
                or 0
            )
    finally:
        engine.dispose()


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


def prepare(database: str, faces: int, seed: int, workdir: Path) -> tuple[str, str | None]:
    """A fresh database holding `faces` synthetic faces: its URL, and its name on PostgreSQL."""
    if database == "sqlite":
        path = workdir / f"soak_{uuid.uuid4().hex[:6]}.db"
        url, name = f"sqlite:///{path}", None
    else:
        name = f"faceid_soak_{uuid.uuid4().hex[:6]}"
        admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        url = make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)
    store = Store.from_url(url)
    upgrade(store.engine)
    store.close()
    if faces:
        fill_sqlite(path, faces, seed) if database == "sqlite" else fill_postgres(url, faces, seed)
    return url, name


def drop(name: str | None) -> None:
    if name is None:
        return
    admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def serve(url: str, log: Path, settings: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FACEID_") or k.startswith("FACEID_TEST_")},
        "FACEID_DATABASE_URL": url,
        "FACEID_PORT": str(port),
        "FACEID_PROVIDERS": "CPUExecutionProvider",
        "FACEID_ADMIN_KEY": KEY,
        "FACEID_ADMIN_KEY_FILE": str(log.with_suffix(".key")),
        "FACEID_RATE_LIMIT_PER_MINUTE": "0",
        **(settings or {}),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve"], env=env, cwd=REPO, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}: see {log}")
        try:
            if httpx.get(base + "/ready", timeout=30).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise TimeoutError("the server was not ready in 600 s")


def run(
    database: str,
    minutes: float,
    concurrency: int,
    faces: int,
    sample_seconds: float,
    seed: int,
    workdir: Path,
    settings: dict[str, str] | None = None,
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    url, name = prepare(database, faces, seed, workdir)
    process: subprocess.Popen[bytes] | None = None
    try:
        process, base = serve(url, workdir / f"soak_{database}.log", settings)
        tally, stop = Tally(), threading.Event()
        threads = [threading.Thread(target=client, args=(base, stop, tally, seed + i)) for i in range(concurrency)]
        start = time.monotonic()
        for t in threads:
            t.start()
        samples: list[dict[str, Any]] = []
        end = start + minutes * 60
        window_start = start
        while time.monotonic() < end:
            time.sleep(max(0.0, min(sample_seconds, end - time.monotonic())))
            now = time.monotonic()
            with tally.lock:
                window = [took for when, _, took in tally.latencies if window_start <= when < now]
            open_fds, sqlite_fds = fds(process.pid)
            connections = sqlite_fds if name is None else postgres_connections(POSTGRES, name)
            samples.append(
                {
                    "minute": round((now - start) / 60, 2),
                    "rss_mb": round(rss_mb(process.pid), 1),
                    "open_fds": open_fds,
                    "db_connections": connections,
                    "requests": len(window),
                    "p50_ms": percentile(window, 50),
                    "p99_ms": percentile(window, 99),
                }
            )
            print(json.dumps(samples[-1]), flush=True)
            window_start = now
        stop.set()
        for t in threads:
            t.join(120)
        ready = httpx.get(base + "/ready", headers=AUTH, timeout=60).json()
        return summary(database, minutes, concurrency, faces, samples, tally, ready)
    finally:
        if process is not None and process.poll() is None:
            process.terminate()
            process.wait(60)
        drop(name)
        if name is None:
            for path in workdir.glob("soak_*.db*"):
                path.unlink(missing_ok=True)


def summary(
    database: str,
    minutes: float,
    concurrency: int,
    faces: int,
    samples: list[dict[str, Any]],
    tally: Tally,
    ready: dict[str, Any],
) -> dict[str, Any]:
    full = minutes >= 15
    warm, steady = (5.0, 10.0) if full else (minutes / 3, 2 * minutes / 3)
    after_warm = [s for s in samples if s["minute"] > warm]
    rss_growth = round(after_warm[-1]["rss_mb"] / after_warm[0]["rss_mb"] - 1, 4) if len(after_warm) >= 2 else None
    early = [took for when, _, took in tally.latencies if warm * 60 <= when - tally.latencies[0][0] < steady * 60]
    late = [
        took
        for when, _, took in tally.latencies
        if when - tally.latencies[0][0] >= (minutes - (5 if full else minutes / 3)) * 60
    ]
    p99_early, p99_late = percentile(early, 99), percentile(late, 99)
    requests = sum(sum(c.values()) for c in tally.statuses.values())
    return {
        "database": database,
        "minutes": minutes,
        "concurrency": concurrency,
        "gallery_start": faces,
        "windows": "minutes 5-10 vs the last 5" if full else f"scaled: {warm:.2f}-{steady:.2f} vs the last third",
        "requests": requests,
        "statuses": tally.statuses,
        "errors": len(tally.errors),
        "error_examples": tally.errors[:10],
        "rss_growth_after_warmup": rss_growth,
        "p99_early_ms": p99_early,
        "p99_late_ms": p99_late,
        "p99_ratio": round(p99_late / p99_early, 3) if p99_early and p99_late else None,
        "per_operation_ms": {
            op: {"p50": percentile(times, 50), "p99": percentile(times, 99)}
            for op in EXPECTED
            if (times := [took for _, o, took in tally.latencies if o == op])
        },
        "in_sync": ready.get("in_sync"),
        "gallery_size": ready.get("gallery_size"),
        "searchable_faces_in_db": ready.get("searchable_faces_in_db"),
        "gallery_fingerprint": ready.get("gallery_fingerprint"),
        "goals_met": bool(
            not tally.errors
            and ready.get("in_sync")
            and ready.get("gallery_size") == ready.get("searchable_faces_in_db")
            and rss_growth is not None
            and rss_growth <= 0.05
            and p99_early
            and p99_late
            and p99_late <= 1.2 * p99_early
        ),
        "samples": samples,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    minutes = [s["minute"] for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(8, 10), sharex=True)
    axes[0].plot(minutes, [s["rss_mb"] for s in samples], marker="o")
    axes[0].set_ylabel("RSS (MB)")
    axes[1].plot(minutes, [s["open_fds"] for s in samples], marker="o")
    axes[1].set_ylabel("open fds")
    axes[2].plot(minutes, [s["db_connections"] for s in samples], marker="o")
    axes[2].set_ylabel("DB connections")
    axes[3].plot(minutes, [s["p50_ms"] for s in samples], marker="o", label="p50")
    axes[3].plot(minutes, [s["p99_ms"] for s in samples], marker="o", label="p99")
    axes[3].set_ylabel("latency (ms)")
    axes[3].set_xlabel("minute")
    axes[3].legend()
    fig.suptitle(
        f"soak, {result['database']}: {result['minutes']} min, {result['concurrency']} clients, "
        f"{result['gallery_start']:,} faces at start"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--faces", type=int, default=10_000)
    parser.add_argument("--sample-seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=OUT / "soak")
    parser.add_argument(
        "--setting", action="append", default=[], metavar="FACEID_X=VALUE", help="a server setting (repeatable)"
    )
    parser.add_argument("--label", default="", help="suffix for the report's file names (soak_<db><label>.json)")
    parser.add_argument("--publish", action="store_true", help="copy the report and plot to bench/results/")
    args = parser.parse_args(argv)
    result = run(
        args.database,
        args.minutes,
        args.concurrency,
        args.faces,
        args.sample_seconds,
        args.seed,
        args.workdir,
        dict(s.split("=", 1) for s in args.setting),
    )
    OUT.mkdir(parents=True, exist_ok=True)
    stem = f"soak_{args.database}{args.label}"
    report, figure = OUT / f"{stem}.json", OUT / f"{stem}.png"
    result["settings"] = dict(s.split("=", 1) for s in args.setting)
    report.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, figure)
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    report_written(report, figure, publish_results=args.publish)
    return 0 if result["goals_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
