"""All SQL the service runs. Returns plain records, never ORM objects or sessions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Engine, create_engine, delete, event, func, or_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from service.errors import Conflict, NotFound
from service.store.tables import CollectionRow, FaceEventRow, FaceRow, IdentityConflictRow, IdentityRow


@dataclass(frozen=True)
class IdentityRecord:
    id: int
    name: str
    external_id: str | None
    faces: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class FaceRecord:
    id: int
    identity_id: int
    model: str
    box: tuple[float, float, float, float]
    score: float
    image_sha256: str
    created_at: datetime


@dataclass(frozen=True)
class NewFace:
    embedding: NDArray[np.float32]
    model: str
    box: tuple[float, float, float, float]
    score: float
    image_sha256: str


@dataclass(frozen=True)
class GalleryFingerprint:
    """What a gallery in step with the database at log position `seq` holds: its number of
    faces and the sums of their face and identity ids (a face missing, extra or filed under
    another identity changes them)."""

    seq: int
    faces: int
    face_id_sum: int
    identity_id_sum: int


@dataclass(frozen=True)
class FaceChange:
    seq: int
    op: str  # "add" | "remove"
    face_id: int
    identity_id: int
    collection_id: int
    model: str


@dataclass(frozen=True)
class CollectionRecord:
    id: int
    name: str
    model: str  # manifest name@version of the model its faces are embedded with
    target_fpir: float | None
    threshold: float | None
    created_at: datetime


def _collection_record(row: CollectionRow) -> CollectionRecord:
    return CollectionRecord(row.id, row.name, row.model, row.target_fpir, row.threshold, row.created_at)


# Execution option naming how a SQLite transaction begins: DEFERRED (reads), IMMEDIATE
# (writes: the write lock is taken before the first read, so what a write checks cannot
# change before it writes) or EXCLUSIVE (migrations).
SQLITE_BEGIN = "faceid_sqlite_begin"


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:")
        # An in-memory database exists per connection: share one across threads.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=StaticPool if memory else None,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # The driver's own transaction handling starts transactions late and always
            # DEFERRED; BEGIN is emitted below instead (SQLAlchemy's documented recipe).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            if ":memory:" not in url:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            # Deleted faces are overwritten in the file, not left in free pages.
            cursor.execute("PRAGMA secure_delete=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            mode = conn.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    # A database that is down or unreachable fails a request in seconds (503 database_unavailable),
    # never hangs it: a bounded connect, and a bounded wait for a pooled connection.
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=10,
        connect_args={"connect_timeout": 5} if url.startswith("postgresql") else {},
    )


def _face_record(row: FaceRow) -> FaceRecord:
    return FaceRecord(
        id=row.id,
        identity_id=row.identity_id,
        model=row.model,
        box=(row.box_x1, row.box_y1, row.box_x2, row.box_y2),
        score=row.detector_score,
        image_sha256=row.image_sha256,
        created_at=row.created_at,
    )


# Writers take this PostgreSQL advisory lock (until commit) so change-log sequence
# numbers become visible in order: a reader that has seen entry n never later
# finds an entry below n appearing.
_WRITE_LOCK_KEY = 0x46414346
# Writers NOTIFY this channel in the transaction that appends to the change log, so
# followers (service.store.notify) sync at commit instead of at their next poll.
CHANGES_CHANNEL = "faceid_changes"


class Store:
    """The database: collections, identities, faces and the change log.

    Identity and face operations are scoped to one collection: `store.collection(id)` gives
    them, and an id of another collection is NotFound, exactly like an id that does not exist.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(
            engine.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"}), expire_on_commit=False
        )
        self._postgres = engine.dialect.name == "postgresql"
        self._sqlite_file = engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:")

    def _writer(self) -> Session:
        """A write transaction. Writers are serialised (SQLite's write lock from the first
        statement, a PostgreSQL advisory lock), so whatever a write reads to check holds
        until it commits."""
        session = self._write_sessions()
        if self._postgres:
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _WRITE_LOCK_KEY})
            # Delivered at commit, never for a rollback; one per transaction.
            session.execute(text("SELECT pg_notify(:c, '')"), {"c": CHANGES_CHANNEL})
        return session

    @classmethod
    def from_url(cls, url: str, *, pool_size: int = 10) -> Store:
        return cls(make_engine(url, pool_size=pool_size))

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def collection(self, collection_id: int) -> CollectionStore:
        return CollectionStore(self, collection_id)

    def _forget(self) -> None:
        """After a deletion on SQLite: move the write-ahead log into the file (where secure_delete
        has zeroed the freed pages) and truncate it, so the deleted embeddings' bytes leave the
        disk now rather than at some later checkpoint. Best effort: a long reader can hold it off."""
        if self._sqlite_file:
            with self.engine.connect() as conn:  # outside any transaction: the driver's own connection
                conn.connection.dbapi_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]

    # --- collections --------------------------------------------------------------

    def create_collection(
        self, name: str, model: str, *, target_fpir: float | None = None, threshold: float | None = None
    ) -> CollectionRecord:
        with self._writer() as session:
            if session.scalar(select(CollectionRow.id).where(CollectionRow.name == name)) is not None:
                raise Conflict(f"collection {name!r} already exists")
            row = CollectionRow(name=name, model=model, target_fpir=target_fpir, threshold=threshold)
            session.add(row)
            session.commit()
            return _collection_record(row)

    def ensure_collection(self, name: str, model: str) -> CollectionRecord:
        """The collection, created if missing; one made by a migration without a model is pinned to `model`."""
        with self._writer() as session:
            row = session.scalar(select(CollectionRow).where(CollectionRow.name == name))
            if row is None:
                row = CollectionRow(name=name, model=model)
                session.add(row)
            elif not row.model:
                row.model = model
            session.commit()
            return _collection_record(row)

    def get_collection(self, name: str) -> CollectionRecord:
        with self._sessions() as session:
            row = session.scalar(select(CollectionRow).where(CollectionRow.name == name))
            if row is None:
                raise NotFound(f"collection {name!r} does not exist")
            return _collection_record(row)

    def list_collections(self) -> list[CollectionRecord]:
        with self._sessions() as session:
            return [_collection_record(r) for r in session.scalars(select(CollectionRow).order_by(CollectionRow.id))]

    def collection_counts(self) -> dict[int, tuple[int, int]]:
        """collection id -> (identities, faces)."""
        with self._sessions() as session:
            people = dict(
                session.execute(
                    select(IdentityRow.collection_id, func.count()).group_by(IdentityRow.collection_id)
                ).all()
            )
            faces = dict(
                session.execute(select(FaceRow.collection_id, func.count()).group_by(FaceRow.collection_id)).all()
            )
        return {int(c): (int(people.get(c, 0)), int(faces.get(c, 0))) for c in set(people) | set(faces)}

    def delete_collection(self, name: str) -> list[int]:
        """The collection, its identities and their faces, in one transaction; every face removal is logged."""
        with self._writer() as session:
            row = session.scalar(select(CollectionRow).where(CollectionRow.name == name))
            if row is None:
                raise NotFound(f"collection {name!r} does not exist")
            deleted = (
                delete(FaceRow)
                .where(FaceRow.collection_id == row.id)
                .returning(FaceRow.id, FaceRow.identity_id, FaceRow.model)
            )
            faces = sorted((int(f), int(i), str(m)) for f, i, m in session.execute(deleted))
            session.add_all(
                FaceEventRow(op="remove", face_id=f, identity_id=i, collection_id=row.id, model=m) for f, i, m in faces
            )
            session.execute(delete(IdentityConflictRow).where(IdentityConflictRow.collection_id == row.id))
            session.execute(delete(IdentityRow).where(IdentityRow.collection_id == row.id))
            session.delete(row)
            session.commit()
        self._forget()
        return [f for f, _, _ in faces]

    # --- identities (one collection) ---------------------------------------------

    def _identity(self, session: Session, collection_id: int, identity_id: int) -> IdentityRow:
        row = session.get(IdentityRow, identity_id)
        if row is None or row.collection_id != collection_id:
            raise NotFound(f"identity {identity_id} does not exist")
        return row

    def _record(self, session: Session, row: IdentityRow) -> IdentityRecord:
        count = session.scalar(select(func.count(FaceRow.id)).where(FaceRow.identity_id == row.id)) or 0
        return IdentityRecord(row.id, row.name, row.external_id, int(count), row.created_at, row.updated_at)

    def _commit(self, session: Session, external_id: str | None) -> None:
        try:
            session.commit()
        except IntegrityError as exc:
            session.rollback()
            if external_id is None:
                raise
            raise Conflict(f"external_id {external_id!r} is already used by another identity") from exc

    def _add_faces(self, session: Session, identity: IdentityRow, faces: list[NewFace]) -> list[FaceRecord]:
        rows = [
            FaceRow(
                identity_id=identity.id,
                collection_id=identity.collection_id,
                embedding=np.ascontiguousarray(f.embedding, dtype="<f4").tobytes(),
                dim=int(f.embedding.shape[0]),
                model=f.model,
                box_x1=f.box[0],
                box_y1=f.box[1],
                box_x2=f.box[2],
                box_y2=f.box[3],
                detector_score=f.score,
                image_sha256=f.image_sha256,
            )
            for f in faces
        ]
        session.add_all(rows)
        session.flush()
        session.add_all(
            FaceEventRow(
                op="add", face_id=r.id, identity_id=identity.id, collection_id=identity.collection_id, model=r.model
            )
            for r in rows
        )
        return [_face_record(r) for r in rows]

    def _flag_conflicts(self, session: Session, identity: IdentityRow, conflicts: Sequence[tuple[int, float]]) -> None:
        """Record that `identity` matched these (other identity, similarity) at enrollment. Others
        deleted meanwhile, of another collection or already flagged with it are skipped."""
        best: dict[int, float] = {}
        for other, similarity in conflicts:
            if other != identity.id:
                best[other] = max(similarity, best.get(other, -1.0))
        if not best:
            return
        alive = set(
            session.scalars(
                select(IdentityRow.id).where(
                    IdentityRow.id.in_(best), IdentityRow.collection_id == identity.collection_id
                )
            )
        )
        flagged = {
            (int(a), int(b))
            for a, b in session.execute(
                select(IdentityConflictRow.identity_a, IdentityConflictRow.identity_b).where(
                    or_(IdentityConflictRow.identity_a == identity.id, IdentityConflictRow.identity_b == identity.id)
                )
            )
        }
        for other in sorted(alive):
            pair = (min(other, identity.id), max(other, identity.id))
            if pair not in flagged:
                session.add(
                    IdentityConflictRow(
                        identity_a=pair[0],
                        identity_b=pair[1],
                        collection_id=identity.collection_id,
                        similarity=float(best[other]),
                    )
                )

    def create_identity(
        self,
        collection_id: int,
        name: str,
        external_id: str | None,
        faces: list[NewFace],
        conflicts: Sequence[tuple[int, float]] = (),
    ) -> tuple[IdentityRecord, list[FaceRecord]]:
        """One transaction: the identity and all its faces (and the conflicts they were enrolled
        past, as (other identity, similarity)), or nothing."""
        with self._writer() as session:
            if session.get(CollectionRow, collection_id) is None:
                raise NotFound(f"collection {collection_id} does not exist")
            if external_id is not None and session.scalar(
                select(IdentityRow.id).where(
                    IdentityRow.collection_id == collection_id, IdentityRow.external_id == external_id
                )
            ):
                raise Conflict(f"external_id {external_id!r} is already used by another identity")
            row = IdentityRow(collection_id=collection_id, name=name, external_id=external_id)
            session.add(row)
            session.flush()
            records = self._add_faces(session, row, faces)
            self._flag_conflicts(session, row, conflicts)
            self._commit(session, external_id)
            return IdentityRecord(
                row.id, row.name, row.external_id, len(records), row.created_at, row.updated_at
            ), records

    def add_faces(
        self,
        collection_id: int,
        identity_id: int,
        faces: list[NewFace],
        conflicts: Sequence[tuple[int, float]] = (),
    ) -> tuple[IdentityRecord, list[FaceRecord]]:
        """Faces for an identity that exists when they are written: the check and the write are one
        serialised transaction, so an identity deleted meanwhile gives NotFound and nothing is stored."""
        with self._writer() as session:
            row = self._identity(session, collection_id, identity_id)
            try:
                records = self._add_faces(session, row, faces)
                self._flag_conflicts(session, row, conflicts)
                row.updated_at = records[0].created_at if records else row.updated_at
                session.commit()
            except IntegrityError as exc:  # belt and braces: the foreign key says it is gone
                session.rollback()
                raise NotFound(f"identity {identity_id} does not exist") from exc
            return self._record(session, row), records

    def get_identity(self, collection_id: int, identity_id: int) -> IdentityRecord:
        with self._sessions() as session:
            return self._record(session, self._identity(session, collection_id, identity_id))

    def find_by_external_id(self, collection_id: int, external_id: str) -> IdentityRecord | None:
        with self._sessions() as session:
            row = session.scalar(
                select(IdentityRow).where(
                    IdentityRow.collection_id == collection_id, IdentityRow.external_id == external_id
                )
            )
            return self._record(session, row) if row is not None else None

    def get_identities(self, collection_id: int, ids: list[int]) -> dict[int, IdentityRecord]:
        if not ids:
            return {}
        # One round trip (it is on /identify's path): the identities with their face counts.
        faces = (
            select(func.count(FaceRow.id)).where(FaceRow.identity_id == IdentityRow.id).correlate(IdentityRow)
        ).scalar_subquery()
        query = select(
            IdentityRow.id,
            IdentityRow.name,
            IdentityRow.external_id,
            faces,
            IdentityRow.created_at,
            IdentityRow.updated_at,
        ).where(IdentityRow.id.in_(ids), IdentityRow.collection_id == collection_id)
        with self._sessions() as session:
            return {
                r[0]: IdentityRecord(r[0], r[1], r[2], int(r[3] or 0), r[4], r[5]) for r in session.execute(query).all()
            }

    def list_identities(
        self, collection_id: int, *, limit: int, offset: int, name: str | None = None
    ) -> tuple[list[IdentityRecord], int]:
        with self._sessions() as session:
            query = select(IdentityRow).where(IdentityRow.collection_id == collection_id)
            if name:
                pattern = "%" + name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                query = query.where(func.lower(IdentityRow.name).like(pattern.lower(), escape="\\"))
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(query.order_by(IdentityRow.id).limit(limit).offset(offset)).all()
            records = self.get_identities(collection_id, [r.id for r in rows])
            return [records[r.id] for r in rows], int(total)

    def update_identity(
        self,
        collection_id: int,
        identity_id: int,
        *,
        name: str | None = None,
        external_id: str | None = None,
        clear_external_id: bool = False,
    ) -> IdentityRecord:
        with self._writer() as session:
            row = self._identity(session, collection_id, identity_id)
            if name is not None:
                row.name = name
            if external_id is not None or clear_external_id:
                row.external_id = external_id
            self._commit(session, external_id)
            return self._record(session, row)

    def delete_identity(self, collection_id: int, identity_id: int) -> list[int]:
        """Deletes the identity and its faces; returns the deleted face ids.

        The faces are deleted with RETURNING and exactly those rows get a `remove` entry in the
        change log, in the same transaction: no face can leave without the gallery hearing of it.
        """
        with self._writer() as session:
            self._identity(session, collection_id, identity_id)
            deleted = delete(FaceRow).where(FaceRow.identity_id == identity_id).returning(FaceRow.id, FaceRow.model)
            faces = sorted((int(fid), str(model)) for fid, model in session.execute(deleted))
            session.add_all(
                FaceEventRow(
                    op="remove", face_id=fid, identity_id=identity_id, collection_id=collection_id, model=model
                )
                for fid, model in faces
            )
            session.execute(
                delete(IdentityConflictRow).where(
                    or_(IdentityConflictRow.identity_a == identity_id, IdentityConflictRow.identity_b == identity_id)
                )
            )
            session.execute(delete(IdentityRow).where(IdentityRow.id == identity_id))
            session.commit()
        self._forget()
        return [fid for fid, _ in faces]

    # --- faces (one collection) ----------------------------------------------------

    def list_faces(self, collection_id: int, identity_id: int) -> list[FaceRecord]:
        with self._sessions() as session:
            self._identity(session, collection_id, identity_id)
            rows = session.scalars(select(FaceRow).where(FaceRow.identity_id == identity_id).order_by(FaceRow.id)).all()
            return [_face_record(r) for r in rows]

    def delete_face(self, collection_id: int, identity_id: int, face_id: int) -> None:
        with self._writer() as session:
            self._identity(session, collection_id, identity_id)
            gone = session.execute(
                delete(FaceRow)
                .where(FaceRow.id == face_id, FaceRow.identity_id == identity_id)
                .returning(FaceRow.model)
            ).all()
            if not gone:
                raise NotFound(f"face {face_id} of identity {identity_id} does not exist")
            session.add(
                FaceEventRow(
                    op="remove", face_id=face_id, identity_id=identity_id, collection_id=collection_id, model=gone[0][0]
                )
            )
            session.commit()
        self._forget()

    def identity_embeddings(self, collection_id: int, identity_id: int, model: str) -> NDArray[np.float32]:
        with self._sessions() as session:
            self._identity(session, collection_id, identity_id)
            rows = session.execute(
                select(FaceRow.embedding, FaceRow.dim).where(FaceRow.identity_id == identity_id, FaceRow.model == model)
            ).all()
            if not rows:
                return np.zeros((0, 0), np.float32)
            return np.stack([np.frombuffer(b, dtype="<f4", count=d) for b, d in rows]).astype(np.float32)

    # --- the galleries' view ---------------------------------------------------------

    def count_faces_by_model(self, collection_id: int | None = None) -> dict[str, int]:
        query = select(FaceRow.model, func.count()).group_by(FaceRow.model)
        if collection_id is not None:
            query = query.where(FaceRow.collection_id == collection_id)
        with self._sessions() as session:
            return {m: int(n) for m, n in session.execute(query)}

    def fingerprints(self, model: str) -> tuple[int, dict[int, GalleryFingerprint]]:
        """The log position, and per collection a summary of `model`'s faces, read in one statement
        (one snapshot): a gallery that has applied the log up to that position must hold exactly these."""
        seq = select(func.coalesce(func.max(FaceEventRow.seq), 0)).scalar_subquery()
        query = (
            select(
                FaceRow.collection_id,
                func.count(),
                func.coalesce(func.sum(FaceRow.id), 0),
                func.coalesce(func.sum(FaceRow.identity_id), 0),
                seq,
            )
            .where(FaceRow.model == model)
            .group_by(FaceRow.collection_id)
        )
        with self._sessions() as session:
            rows = session.execute(query).all()
            position = int(rows[0][4]) if rows else int(session.scalar(select(seq)) or 0)
        return position, {int(c): GalleryFingerprint(position, int(n), int(a), int(b)) for c, n, a, b, _ in rows}

    def conflicts(self, collection_id: int) -> list[tuple[int, int]]:
        """The collection's pairs of identities flagged as possibly one person, (lower id, higher id)."""
        with self._sessions() as session:
            rows = session.execute(
                select(IdentityConflictRow.identity_a, IdentityConflictRow.identity_b)
                .where(IdentityConflictRow.collection_id == collection_id)
                .order_by(IdentityConflictRow.identity_a, IdentityConflictRow.identity_b)
            ).all()
            return [(int(a), int(b)) for a, b in rows]

    def last_change(self) -> int:
        with self._sessions() as session:
            return int(session.scalar(select(func.coalesce(func.max(FaceEventRow.seq), 0))) or 0)

    def iter_embeddings(
        self,
        model: str,
        *,
        collection_id: int | None = None,
        batch: int = 50_000,
        face_ids: list[int] | None = None,
    ) -> Iterator[tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]]:
        """(face_ids, identity_ids, collection_ids, vectors) of `model`, streamed in batches by keyset paging."""
        after = 0
        with self._sessions() as session:
            while True:
                query = select(FaceRow.id, FaceRow.identity_id, FaceRow.collection_id, FaceRow.embedding).where(
                    FaceRow.model == model, FaceRow.id > after
                )
                if collection_id is not None:
                    query = query.where(FaceRow.collection_id == collection_id)
                if face_ids is not None:
                    query = query.where(FaceRow.id.in_(face_ids))
                rows = session.execute(query.order_by(FaceRow.id).limit(batch)).all()
                if not rows:
                    return
                ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                owners = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
                collections = np.fromiter((r[2] for r in rows), dtype=np.int64, count=len(rows))
                vectors = np.frombuffer(b"".join(r[3] for r in rows), dtype="<f4").reshape(len(rows), -1)
                yield ids, owners, collections, vectors.astype(np.float32, copy=False)
                after = int(ids[-1])
                if len(rows) < batch:
                    return

    def changes_since(self, seq: int, *, limit: int = 10_000) -> list[FaceChange]:
        with self._sessions() as session:
            rows = session.scalars(
                select(FaceEventRow).where(FaceEventRow.seq > seq).order_by(FaceEventRow.seq).limit(limit)
            ).all()
            return [FaceChange(r.seq, r.op, r.face_id, r.identity_id, r.collection_id, r.model) for r in rows]


class CollectionStore:
    """The identity and face operations of one collection."""

    def __init__(self, store: Store, collection_id: int) -> None:
        self.store = store
        self.collection_id = collection_id

    def create_identity(
        self, name: str, external_id: str | None, faces: list[NewFace], conflicts: Sequence[tuple[int, float]] = ()
    ) -> tuple[IdentityRecord, list[FaceRecord]]:
        return self.store.create_identity(self.collection_id, name, external_id, faces, conflicts)

    def add_faces(
        self, identity_id: int, faces: list[NewFace], conflicts: Sequence[tuple[int, float]] = ()
    ) -> tuple[IdentityRecord, list[FaceRecord]]:
        return self.store.add_faces(self.collection_id, identity_id, faces, conflicts)

    def get_identity(self, identity_id: int) -> IdentityRecord:
        return self.store.get_identity(self.collection_id, identity_id)

    def find_by_external_id(self, external_id: str) -> IdentityRecord | None:
        return self.store.find_by_external_id(self.collection_id, external_id)

    def get_identities(self, ids: list[int]) -> dict[int, IdentityRecord]:
        return self.store.get_identities(self.collection_id, ids)

    def list_identities(self, *, limit: int, offset: int, name: str | None = None) -> tuple[list[IdentityRecord], int]:
        return self.store.list_identities(self.collection_id, limit=limit, offset=offset, name=name)

    def update_identity(
        self,
        identity_id: int,
        *,
        name: str | None = None,
        external_id: str | None = None,
        clear_external_id: bool = False,
    ) -> IdentityRecord:
        return self.store.update_identity(
            self.collection_id, identity_id, name=name, external_id=external_id, clear_external_id=clear_external_id
        )

    def delete_identity(self, identity_id: int) -> list[int]:
        return self.store.delete_identity(self.collection_id, identity_id)

    def list_faces(self, identity_id: int) -> list[FaceRecord]:
        return self.store.list_faces(self.collection_id, identity_id)

    def delete_face(self, identity_id: int, face_id: int) -> None:
        self.store.delete_face(self.collection_id, identity_id, face_id)

    def identity_embeddings(self, identity_id: int, model: str) -> NDArray[np.float32]:
        return self.store.identity_embeddings(self.collection_id, identity_id, model)
