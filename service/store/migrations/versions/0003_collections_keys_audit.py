"""collections (tenants), API keys and the audit log; existing people move into `default`

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from service.store import sequences

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        "collections",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("target_fpir", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("created_at", When, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_collections")),
        sa.UniqueConstraint("name", name=op.f("uq_collections_name")),
        sqlite_autoincrement=True,
    )
    # `default` holds everyone enrolled before collections existed, pinned to the model that made
    # most of their faces ('' when there are none: the service pins its own at start-up).
    model = bind.execute(
        sa.text("SELECT model FROM faces GROUP BY model ORDER BY count(*) DESC, model LIMIT 1")
    ).scalar()
    collections = sa.table("collections", sa.column("name"), sa.column("model"), sa.column("created_at", When))
    op.bulk_insert(collections, [{"name": "default", "model": model or "", "created_at": datetime.now(UTC)}])
    default_id = bind.execute(sa.text("SELECT id FROM collections WHERE name = 'default'")).scalar_one()

    with op.batch_alter_table("identities", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.add_column(sa.Column("collection_id", Id, nullable=True))
    op.execute(sa.text(f"UPDATE identities SET collection_id = {int(default_id)}"))
    with op.batch_alter_table("identities", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.alter_column("collection_id", existing_type=Id, nullable=False)
        batch.drop_constraint("uq_identities_external_id", type_="unique")
        batch.create_unique_constraint("uq_identities_collection_id_external_id", ["collection_id", "external_id"])
        batch.create_foreign_key("fk_identities_collection_id_collections", "collections", ["collection_id"], ["id"])
        batch.create_index("ix_identities_collection_id", ["collection_id"])

    for table in ("faces", "face_events"):
        with op.batch_alter_table(table, table_kwargs={"sqlite_autoincrement": True}) as batch:
            batch.add_column(sa.Column("collection_id", Id, nullable=True))
        op.execute(sa.text(f"UPDATE {table} SET collection_id = {int(default_id)}"))
        with op.batch_alter_table(table, table_kwargs={"sqlite_autoincrement": True}) as batch:
            batch.alter_column("collection_id", existing_type=Id, nullable=False)
            if table == "faces":
                batch.create_index("ix_faces_collection_id", ["collection_id"])

    # SQLite rebuilt those tables: their counters must not restart below ids already handed out.
    sequences.reseed(bind)

    op.create_table(
        "api_keys",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.String(200), nullable=False),
        sa.Column("collections", sa.String(2000), nullable=True),
        sa.Column("rate_limit", sa.Integer(), nullable=True),
        sa.Column("created_at", When, nullable=False),
        sa.Column("revoked_at", When, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("name", name=op.f("uq_api_keys_name")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "audit_log",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("at", When, nullable=False),
        sa.Column("key_id", Id, nullable=True),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("collection", sa.String(64), nullable=True),
        sa.Column("identity_id", Id, nullable=True),
        sa.Column("face_ids", sa.String(4000), nullable=True),
        sa.Column("faces", sa.Integer(), nullable=False),
        sa.Column("client", sa.String(64), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_identity_id", "audit_log", ["identity_id"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_identity_id", "audit_log")
    op.drop_index("ix_audit_log_at", "audit_log")
    op.drop_table("audit_log")
    op.drop_table("api_keys")
    for table in ("face_events", "faces"):
        with op.batch_alter_table(table, table_kwargs={"sqlite_autoincrement": True}) as batch:
            if table == "faces":
                batch.drop_index("ix_faces_collection_id")
            batch.drop_column("collection_id")
    with op.batch_alter_table("identities", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_index("ix_identities_collection_id")
        batch.drop_constraint("fk_identities_collection_id_collections", type_="foreignkey")
        batch.drop_constraint("uq_identities_collection_id_external_id", type_="unique")
        batch.create_unique_constraint("uq_identities_external_id", ["external_id"])
        batch.drop_column("collection_id")
    op.drop_table("collections")
