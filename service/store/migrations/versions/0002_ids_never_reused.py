"""ids are never reused: SQLite tables become AUTOINCREMENT

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

SQLite gives a new row max(rowid) + 1 unless the table is AUTOINCREMENT, so deleting the
newest identity handed its id (and its faces' ids) to the next person enrolled. A table
cannot be altered into AUTOINCREMENT: it is rebuilt, and its counter starts past every id
ever handed out, which the change log remembers even for rows already deleted.
PostgreSQL's sequences never go back: nothing to do there.
"""

from __future__ import annotations

from alembic import op

from service.store.sequences import reseed

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# table -> the change-log column that remembers its ids
_TABLES = {"identities": "identity_id", "faces": "face_id", "face_events": None}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    # service.store.migrate turns foreign keys off around SQLite migrations, so that
    # rebuilding `identities` does not cascade into `faces`.
    for table in _TABLES:
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": True}):
            pass
    reseed(bind)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    for table in _TABLES:
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": False}):
            pass
