"""Apply the Alembic migrations (programmatic: no alembic.ini needed).

Several processes may start at once on one database (uvicorn workers, replicas, two
servers on one SQLite file): migrators are serialised, by a PostgreSQL advisory lock or by
an exclusive SQLite transaction, and the ones that wait find the schema already at head.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from service.store.repository import SQLITE_BEGIN

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works: it only has to be the same in every process that migrates.
_PG_LOCK_KEY = 0x46414345  # "FACE"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def wait_for_database(engine: Engine, *, timeout: float = 60.0, first_delay: float = 0.5) -> None:
    """Connect, retrying with a doubling back-off (at most 5 s apart) for up to `timeout` seconds.

    A database that is still starting (a fresh volume's initialisation, a replica's restart)
    refuses connections for a while: a migrator that gives up at once leaves the service
    that waits on it never started.
    """
    deadline = time.monotonic() + timeout
    delay = first_delay
    while True:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return
        except OperationalError as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            log.warning("database not reachable yet (%s); retrying in %.1f s", type(exc.orig).__name__, delay)
            time.sleep(min(delay, left))
            delay = min(delay * 2, 5.0)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision`. Safe when several processes start at once."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        if sqlite:
            # Rebuilding a table (SQLite's only way to alter most things) drops the old one,
            # and with foreign keys on, dropping `identities` would cascade into `faces`. The
            # pragma only takes effect outside a transaction; the check below replaces it.
            conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
            conn = conn.execution_options(**{SQLITE_BEGIN: "EXCLUSIVE"})
        try:
            with conn.begin():
                if engine.dialect.name == "postgresql":
                    # Serialise concurrent migrators (several workers or replicas starting together).
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
                config.attributes["connection"] = conn
                command.upgrade(config, revision)
                if sqlite:
                    broken = conn.execute(text("PRAGMA foreign_key_check")).fetchall()
                    if broken:
                        raise RuntimeError(f"migration left rows that break foreign keys: {broken[:5]}")
        finally:
            if sqlite:
                conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]
    log.info("database schema at %s", revision)
