"""initial schema: identities, faces, face_events

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "face_events",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("op", sa.String(length=8), nullable=False),
        sa.Column("face_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("identity_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_face_events")),
    )
    with op.batch_alter_table("face_events", schema=None) as batch_op:
        batch_op.create_index("ix_face_events_face_id", ["face_id"], unique=False)

    op.create_table(
        "identities",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identities")),
        sa.UniqueConstraint("external_id", name=op.f("uq_identities_external_id")),
    )
    with op.batch_alter_table("identities", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_identities_name"), ["name"], unique=False)

    op.create_table(
        "faces",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("identity_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("box_x1", sa.Float(), nullable=False),
        sa.Column("box_y1", sa.Float(), nullable=False),
        sa.Column("box_x2", sa.Float(), nullable=False),
        sa.Column("box_y2", sa.Float(), nullable=False),
        sa.Column("detector_score", sa.Float(), nullable=False),
        sa.Column("image_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["identity_id"], ["identities.id"], name=op.f("fk_faces_identity_id_identities"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_faces")),
    )
    with op.batch_alter_table("faces", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_faces_identity_id"), ["identity_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_faces_image_sha256"), ["image_sha256"], unique=False)
        batch_op.create_index(batch_op.f("ix_faces_model"), ["model"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("faces", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_faces_model"))
        batch_op.drop_index(batch_op.f("ix_faces_image_sha256"))
        batch_op.drop_index(batch_op.f("ix_faces_identity_id"))

    op.drop_table("faces")
    with op.batch_alter_table("identities", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_identities_name"))

    op.drop_table("identities")
    with op.batch_alter_table("face_events", schema=None) as batch_op:
        batch_op.drop_index("ix_face_events_face_id")

    op.drop_table("face_events")
