"""SQLite AUTOINCREMENT counters that never go back, across table rebuilds.

SQLite keeps each AUTOINCREMENT table's highest id in `sqlite_sequence`. Rebuilding a table (its
only way to alter most things, which migrations do) starts the counter again at the highest id
still in the table, so the ids of rows deleted earlier would be handed out again. After a rebuild
the counters are set past every id the table or the change log has ever held.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

# table -> (its id column, the change-log column that remembers its ids, or None)
COUNTERS: dict[str, tuple[str, str | None]] = {
    "identities": ("id", "identity_id"),
    "faces": ("id", "face_id"),
    "face_events": ("seq", None),
}


def reseed(bind: Connection, tables: dict[str, tuple[str, str | None]] | None = None) -> None:
    if bind.dialect.name != "sqlite":
        return
    for table, (column, logged) in (tables or COUNTERS).items():
        highest = [f"(SELECT coalesce(max({column}), 0) FROM {table})"]
        if logged:
            highest.append(f"(SELECT coalesce(max({logged}), 0) FROM face_events)")
        # the counter itself may already be higher (ids handed out, then deleted)
        highest.append(f"(SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = '{table}')")
        top = bind.execute(sa.text(f"SELECT max({', '.join(highest)})")).scalar_one()
        bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = :t"), {"t": table})
        bind.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :s)"), {"t": table, "s": int(top)})
