"""identity_conflicts: pairs of identities enrolled past the identity-conflict gate

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

A face that matched another identity of its collection and was enrolled anyway
(allow_conflict=true) may be one person enrolled twice. The pair is written in the
enrollment's transaction, so every replica's self-calibration leaves its scores out of the
collection's impostor pairs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "identity_conflicts",
        sa.Column("identity_a", Id, nullable=False),
        sa.Column("identity_b", Id, nullable=False),
        sa.Column("collection_id", Id, nullable=False),
        sa.Column("similarity", sa.Float(), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.ForeignKeyConstraint(
            ["identity_a"],
            ["identities.id"],
            name=op.f("fk_identity_conflicts_identity_a_identities"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["identity_b"],
            ["identities.id"],
            name=op.f("fk_identity_conflicts_identity_b_identities"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("identity_a", "identity_b", name=op.f("pk_identity_conflicts")),
    )
    op.create_index("ix_identity_conflicts_identity_b", "identity_conflicts", ["identity_b"])
    op.create_index("ix_identity_conflicts_collection_id", "identity_conflicts", ["collection_id"])


def downgrade() -> None:
    op.drop_index("ix_identity_conflicts_collection_id", "identity_conflicts")
    op.drop_index("ix_identity_conflicts_identity_b", "identity_conflicts")
    op.drop_table("identity_conflicts")
