"""Start-up at scale: how long the service takes to become ready with N stored faces.

Fills a fresh database with N synthetic 128-d unit vectors (model `sface@2021dec-int8bq`,
two faces per identity, each with its change-log entry: what enrolling would leave),
bulk-loaded with COPY on PostgreSQL and executemany on SQLite. Then it measures
`build_collections(settings)` in this process (models, migrations check, gallery rebuild
streamed from the database) and, unless --no-server, a real `faceid serve` process
from launch to its first 200 on /ready.

    python -m bench.startup --faces 100000 1000000                       # PostgreSQL
    python -m bench.startup --faces 100000 --database sqlite             # SQLite

Writes bench/out/startup.json. The PostgreSQL databases are dropped afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
from numpy.typing import NDArray
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from tqdm import tqdm

from service.app import build_collections
from service.settings import Settings
from service.store import Store
from service.store.migrate import upgrade

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out" / "startup.json"
MODEL = "sface@2021dec-int8bq"
DIM = 128
FACES_PER_IDENTITY = 2
CHUNK = 50_000
POSTGRES = os.environ.get("FACEID_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def unit_vectors(n: int, rng: np.random.Generator) -> NDArray[np.float32]:
    """(n, DIM) float32 rows of norm 1."""
    v = rng.standard_normal((n, DIM), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def chunks(total: int) -> Iterator[tuple[int, int]]:
    """(first face id, count), 1-based ids."""
    for start in range(0, total, CHUNK):
        yield start + 1, min(CHUNK, total - start)


FACE_COLUMNS = (
    "id, identity_id, collection_id, embedding, dim, model, box_x1, box_y1, box_x2, box_y2, "
    "detector_score, image_sha256, created_at, updated_at"
)
EVENT_COLUMNS = "seq, op, face_id, identity_id, collection_id, model, created_at"
COLLECTION = 1  # `default`, made by the migrations
BOX = (0, 0, 112, 112)


def fill_postgres(url: str, faces: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC)
    sha = "0" * 64
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    identities = (faces + FACES_PER_IDENTITY - 1) // FACES_PER_IDENTITY
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur, tqdm(total=faces, unit="face", desc="insert") as bar:
        with cur.copy(
            "COPY identities (id, collection_id, name, external_id, created_at, updated_at) FROM STDIN"
        ) as copy:
            for i in range(1, identities + 1):
                copy.write_row((i, COLLECTION, f"person {i}", f"p{i}", now, now))
        for first, count in chunks(faces):
            vectors = unit_vectors(count, rng)
            ids = range(first, first + count)
            with cur.copy(f"COPY faces ({FACE_COLUMNS}) FROM STDIN") as copy:
                for face_id, v in zip(ids, vectors, strict=True):
                    owner = (face_id - 1) // FACES_PER_IDENTITY + 1
                    copy.write_row(
                        (
                            face_id,
                            owner,
                            COLLECTION,
                            v.tobytes(),
                            DIM,
                            MODEL,
                            0.0,
                            0.0,
                            112.0,
                            112.0,
                            0.9,
                            sha,
                            now,
                            now,
                        )
                    )
            with cur.copy(f"COPY face_events ({EVENT_COLUMNS}) FROM STDIN") as copy:
                for face_id in ids:
                    owner = (face_id - 1) // FACES_PER_IDENTITY + 1
                    copy.write_row((face_id, "add", face_id, owner, COLLECTION, MODEL, now))
            bar.update(count)
        # Rows were given explicit ids: move the sequences past them so later inserts work.
        for table, column in (("identities", "id"), ("faces", "id"), ("face_events", "seq")):
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), (SELECT max({column}) FROM {table}))"
            )
        cur.execute("ANALYZE")


def fill_sqlite(path: Path, faces: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC).isoformat(sep=" ")
    sha = "0" * 64
    identities = (faces + FACES_PER_IDENTITY - 1) // FACES_PER_IDENTITY
    conn = sqlite3.connect(path)
    with conn, tqdm(total=faces, unit="face", desc="insert") as bar:
        conn.executemany(
            "INSERT INTO identities (id, collection_id, name, external_id, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            ((i, COLLECTION, f"person {i}", f"p{i}", now, now) for i in range(1, identities + 1)),
        )
        for first, count in chunks(faces):
            vectors = unit_vectors(count, rng)
            ids = range(first, first + count)
            conn.executemany(
                f"INSERT INTO faces ({FACE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        i,
                        (i - 1) // FACES_PER_IDENTITY + 1,
                        COLLECTION,
                        v.tobytes(),
                        DIM,
                        MODEL,
                        *BOX,
                        0.9,
                        sha,
                        now,
                        now,
                    )
                    for i, v in zip(ids, vectors, strict=True)
                ),
            )
            conn.executemany(
                f"INSERT INTO face_events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                ((i, "add", i, (i - 1) // FACES_PER_IDENTITY + 1, COLLECTION, MODEL, now) for i in ids),
            )
            bar.update(count)
    conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_ready_seconds(url: str, timeout: float = 1800) -> float:
    """A real `faceid serve` process: seconds from launch to the first 200 on /ready."""
    port = free_port()
    env = {**os.environ, "FACEID_DATABASE_URL": url, "FACEID_PORT": str(port), "FACEID_AUTO_MIGRATE": "false"}
    start = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "service", "serve"], env=env, cwd=REPO)
    try:
        while time.monotonic() - start < timeout:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=30).status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"not ready in {timeout} s")
    finally:
        process.terminate()
        process.wait(60)


def measure(url: str, faces: int, server: bool) -> dict[str, Any]:
    settings = Settings(database_url=url, providers=["CPUExecutionProvider"], auto_migrate=False, _env_file=None)
    start = time.monotonic()
    collections = build_collections(settings)
    build = time.monotonic() - start
    if collections.size != faces:
        raise RuntimeError(f"the galleries hold {collections.size} faces, the database {faces}")
    start = time.monotonic()
    collections.rebuild()
    rebuild = time.monotonic() - start
    collections.store.close()
    result: dict[str, Any] = {
        "build_recognizer_s": round(build, 2),
        "gallery_rebuild_s": round(rebuild, 2),
        "faces_per_s": round(faces / rebuild),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    if server:
        result["server_ready_s"] = round(server_ready_seconds(url), 2)
    return result


def fill_and_measure(url: str, fill: Callable[[], None], faces: int, server: bool) -> dict[str, Any]:
    """Migrate an empty database, time `fill` (the bulk insert), then measure start-up on it."""
    store = Store.from_url(url)
    upgrade(store.engine)
    store.close()
    start = time.monotonic()
    fill()
    insert = time.monotonic() - start
    return {"insert_s": round(insert, 1), **measure(url, faces, server)}


def run(database: str, faces: int, seed: int, server: bool, keep: bool, workdir: Path) -> dict[str, Any]:
    if database == "sqlite":
        path = workdir / f"startup_{faces}.db"
        path.unlink(missing_ok=True)
        try:
            return fill_and_measure(f"sqlite:///{path}", lambda: fill_sqlite(path, faces, seed), faces, server)
        finally:
            if not keep:
                path.unlink(missing_ok=True)
    name = f"faceid_bench_{faces}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)
    try:
        return fill_and_measure(url, lambda: fill_postgres(url, faces, seed), faces, server)
    finally:
        if not keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--no-server", action="store_true", help="skip the real server process")
    parser.add_argument("--keep", action="store_true", help="keep the filled databases")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp"), help="where SQLite files go")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    report = json.loads(args.out.read_text()) if args.out.is_file() else {}
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"
    for faces in args.faces:
        result = run(args.database, faces, args.seed, not args.no_server, args.keep, args.workdir)
        result |= {"machine": machine, "command": "python -m bench.startup " + " ".join(sys.argv[1:])}
        report[f"{args.database}/{faces}"] = result
        print(json.dumps({f"{args.database}/{faces}": result}, indent=2))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
