"""PostgreSQL LISTEN/NOTIFY: wake the processes that follow the change log as soon as a write commits.

A notification is only a hint to sync now; what to apply is always read from the
`face_events` log, so a lost or duplicated notification costs nothing, and polling
the log stays the safety net. Writers (`Store._writer`) NOTIFY inside the transaction that appends
to the log: PostgreSQL delivers it at commit, never for a write that rolled back,
and folds the identical notifications of one transaction into one. So every
writer notifies, `faceid enroll-folder` included.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import make_url

from service.store.repository import CHANGES_CHANNEL as CHANNEL
from service.store.repository import Store

log = logging.getLogger(__name__)


class ChangeListener:
    """A thread holding one connection that LISTENs on `CHANNEL`.

    It calls `on_change` for every notification, and once after each (re)connect,
    to catch up on whatever was written while it was away.
    """

    def __init__(self, database_url: str, on_change: Callable[[], object], *, retry_after: float = 1.0) -> None:
        self._conninfo = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._on_change = on_change
        self._retry_after = retry_after
        self._stop = threading.Event()
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faceid-change-listener", daemon=True)

    @classmethod
    def for_store(cls, store: Store, on_change: Callable[[], object]) -> ChangeListener | None:
        """Started and listening for `store`'s database; None where it is not PostgreSQL."""
        if store.engine.dialect.name != "postgresql":
            return None
        return cls(store.engine.url.render_as_string(hide_password=False), on_change).start()

    def start(self) -> ChangeListener:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    self._changed()
                    while not self._stop.is_set():
                        # Wakes at least every 0.5 s to notice stop(); a dead connection raises here.
                        if any(True for _ in conn.notifies(timeout=0.5, stop_after=1)):
                            self._changed()
            except psycopg.Error as exc:
                self.connected.clear()
                log.warning("change listener lost the database (%s); reconnecting", exc)
                self._stop.wait(self._retry_after)
        self.connected.clear()

    def _changed(self) -> None:
        try:
            self._on_change()
        except Exception:  # the poller is still there; keep listening
            log.warning("applying notified changes failed", exc_info=True)
