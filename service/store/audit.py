"""The audit log's SQL: who did what to whose faces, kept for a set time. Never an image or an embedding."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import sessionmaker

from service.store.repository import Store
from service.store.tables import AuditRow, utcnow

MAX_FACE_IDS = 400  # listed per entry; `faces` keeps the count beyond that


@dataclass(frozen=True)
class AuditEntry:
    action: str
    key_id: int | None = None
    collection: str | None = None
    identity_id: int | None = None
    face_ids: tuple[int, ...] = ()
    faces: int = 0
    client: str | None = None
    request_id: str | None = None
    status: int | None = None
    at: datetime | None = None
    id: int | None = None


@dataclass(frozen=True)
class AuditQuery:
    collection: str | None = None
    identity_id: int | None = None
    key_id: int | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _entry(row: AuditRow) -> AuditEntry:
    face_ids = tuple(int(f) for f in row.face_ids.split(",")) if row.face_ids else ()
    return AuditEntry(
        action=row.action,
        key_id=row.key_id,
        collection=row.collection,
        identity_id=row.identity_id,
        face_ids=face_ids,
        faces=row.faces,
        client=row.client,
        request_id=row.request_id,
        status=row.status,
        at=row.at,
        id=row.id,
    )


class AuditLog:
    def __init__(self, store: Store) -> None:
        self._sessions = sessionmaker(store.engine, expire_on_commit=False)

    def append(self, entry: AuditEntry) -> None:
        with self._sessions() as session:
            session.add(
                AuditRow(
                    action=entry.action,
                    key_id=entry.key_id,
                    collection=entry.collection,
                    identity_id=entry.identity_id,
                    face_ids=",".join(str(f) for f in entry.face_ids[:MAX_FACE_IDS]) or None,
                    faces=entry.faces or len(entry.face_ids),
                    client=(entry.client or "")[:64] or None,
                    request_id=entry.request_id,
                    status=entry.status,
                )
            )
            session.commit()

    def query(self, where: AuditQuery, *, limit: int, offset: int) -> tuple[list[AuditEntry], int]:
        """Newest first."""
        query = select(AuditRow)
        if where.collection is not None:
            query = query.where(AuditRow.collection == where.collection)
        if where.identity_id is not None:
            query = query.where(AuditRow.identity_id == where.identity_id)
        if where.key_id is not None:
            query = query.where(AuditRow.key_id == where.key_id)
        if where.action is not None:
            query = query.where(AuditRow.action == where.action)
        if where.since is not None:
            query = query.where(AuditRow.at >= where.since)
        if where.until is not None:
            query = query.where(AuditRow.at < where.until)
        with self._sessions() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(query.order_by(AuditRow.id.desc()).limit(limit).offset(offset)).all()
            return [_entry(r) for r in rows], int(total)

    def prune(self, keep_days: int) -> int:
        """Delete entries older than `keep_days`; returns how many went."""
        with self._sessions() as session:
            result = session.execute(delete(AuditRow).where(AuditRow.at < utcnow() - timedelta(days=keep_days)))
            session.commit()
            return int(getattr(result, "rowcount", 0) or 0)
