"""SQLAlchemy 2.x table definitions.

`face_events` is an append-only change log written in the same transaction as the
faces it describes: a gallery (in this process or another replica) catches up by
reading the events after the last sequence number it applied.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# Stable constraint names, so migrations are the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY; BigInteger elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# Ids are never reused: SQLite hands out max(rowid) + 1 unless the table is AUTOINCREMENT
# (so a deleted identity's id would go to the next person enrolled); PostgreSQL's sequences
# never go back.
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC, on every database.

    SQLite has no time zones: it gives back naive datetimes. They were written as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class CollectionRow(Base):
    """A tenant: its own people, gallery and threshold, and the embedding model it was made with."""

    __tablename__ = "collections"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    model: Mapped[str] = mapped_column(String(200))  # manifest name@version, pinned at creation
    target_fpir: Mapped[float | None] = mapped_column(Float)  # None: the service's FACEID_TARGET_FPIR
    threshold: Mapped[float | None] = mapped_column(Float)  # a fixed cosine threshold instead
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class IdentityRow(Base):
    __tablename__ = "identities"
    __table_args__ = (
        UniqueConstraint("collection_id", "external_id", name="uq_identities_collection_id_external_id"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    collection_id: Mapped[int] = mapped_column(BigId, ForeignKey("collections.id"), index=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    external_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    faces: Mapped[list[FaceRow]] = relationship(back_populates="identity", passive_deletes=True)


class FaceRow(Base):
    __tablename__ = "faces"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    identity_id: Mapped[int] = mapped_column(BigId, ForeignKey("identities.id", ondelete="CASCADE"), index=True)
    collection_id: Mapped[int] = mapped_column(BigId, index=True)  # the identity's, kept for the gallery's reads
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # float32, little-endian, `dim` values
    dim: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(200), index=True)  # manifest name@version
    box_x1: Mapped[float] = mapped_column(Float)
    box_y1: Mapped[float] = mapped_column(Float)
    box_x2: Mapped[float] = mapped_column(Float)
    box_y2: Mapped[float] = mapped_column(Float)
    detector_score: Mapped[float] = mapped_column(Float)
    image_sha256: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    identity: Mapped[IdentityRow] = relationship(back_populates="faces")


class FaceEventRow(Base):
    __tablename__ = "face_events"

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    op: Mapped[str] = mapped_column(String(8))  # "add" | "remove"
    face_id: Mapped[int] = mapped_column(BigId)
    identity_id: Mapped[int] = mapped_column(BigId)
    collection_id: Mapped[int] = mapped_column(BigId)
    model: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (Index("ix_face_events_face_id", "face_id"), NEVER_REUSE_IDS)


class IdentityConflictRow(Base):
    """Two identities of a collection whose faces matched at enrollment, enrolled anyway
    (allow_conflict=true): perhaps one person twice, so their scores are not impostor pairs
    for the collection's self-calibration. `identity_a` < `identity_b`."""

    __tablename__ = "identity_conflicts"

    identity_a: Mapped[int] = mapped_column(BigId, ForeignKey("identities.id", ondelete="CASCADE"), primary_key=True)
    identity_b: Mapped[int] = mapped_column(
        BigId, ForeignKey("identities.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    collection_id: Mapped[int] = mapped_column(BigId, index=True)
    similarity: Mapped[float] = mapped_column(Float)  # the best face pair's, when it was flagged
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiKeyRow(Base):
    """An API key: only a hash of it is stored; `prefix` is public and finds the row."""

    __tablename__ = "api_keys"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))  # sha256 hex of the whole key
    scopes: Mapped[str] = mapped_column(String(200))  # comma-separated
    collections: Mapped[str | None] = mapped_column(String(2000))  # comma-separated names; None: all
    rate_limit: Mapped[int | None] = mapped_column(Integer)  # requests per minute; None: the default
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditRow(Base):
    """Who did what to whose faces. Never an image or an embedding."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"), Index("ix_audit_log_identity_id", "identity_id"), NEVER_REUSE_IDS)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    key_id: Mapped[int | None] = mapped_column(BigId)
    action: Mapped[str] = mapped_column(String(40))
    collection: Mapped[str | None] = mapped_column(String(64))
    identity_id: Mapped[int | None] = mapped_column(BigId)
    face_ids: Mapped[str | None] = mapped_column(String(4000))  # comma-separated
    faces: Mapped[int] = mapped_column(Integer, default=0)
    client: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[int | None] = mapped_column(Integer)
