"""Collections (tenants): each has its own gallery and its own gallery-aware threshold.

`Collections` maps a collection to its state and hands out a `Recognizer` for it. It
also keeps every gallery in step with the database: one change log serves all
collections, applied in order and routed by the collection each entry names. The same
path applies this process's writes and those of other processes or replicas.

A collection pins the embedding model it was created with. This process serves the
collections of its own model; one made with another model answers 409 `model_mismatch`
until its faces are re-enrolled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from service.calibration import SelfCalibration
from service.errors import FaceIdError, NotFound
from service.faces import FaceAnalyzer
from service.gallery import Gallery
from service.recognizer import Recognizer
from service.store import CollectionRecord, Store
from service.store.repository import FaceChange
from service.threshold import GalleryAwareThreshold, SelfTail, ThresholdPolicy

log = logging.getLogger(__name__)

DEFAULT = "default"


class ModelMismatch(FaceIdError):
    code = "model_mismatch"
    status = 409


# At a rebuild, at most this many of a collection's faces (a uniform sample) feed its
# self-calibration: comparing each with up to 2,000 others is cheap for 20,000, not for 1M.
CALIBRATION_SAMPLE = 20_000
# A new self tail is published at most this often, off the request path: at the pair cap below,
# taking the tail holds the change log for ~0.03 s and preparing it costs ~0.3 s more of CPU
# (a soak with 2,000,000 pairs every 5 s let p99 grow from 2.9 to 6.8 s at 10,000 faces).
RECALIBRATE_EVERY = 60.0
# Pairs of faces kept per collection: enough for exceedances down to ~1e-5, ~8 MB.
CALIBRATION_PAIRS = 200_000


@dataclass
class CollectionState:
    record: CollectionRecord
    gallery: Gallery
    threshold: ThresholdPolicy
    # The gallery's own between-identity impostor pairs (service.calibration), kept as it
    # changes; `self_tail` is the snapshot the threshold uses, published off the request path.
    calibration: SelfCalibration | None = None
    self_tail: SelfTail | None = None
    stale: bool = False  # the calibration changed since `self_tail` was published


@dataclass
class GalleryStatus:
    """One process's galleries against the database."""

    size: int  # faces in this process's galleries
    searchable_in_db: int  # faces of this model in the database
    in_sync: bool
    fingerprint: tuple[int, int, int]  # faces, sum of face ids, sum of identity ids, over every gallery
    other_models: dict[str, int] = field(default_factory=dict)
    last_change: int = 0
    drift_repairs: int = 0  # rebuilds since start because a gallery differed from the database


class Collections:
    def __init__(
        self,
        *,
        store: Store,
        analyzer: FaceAnalyzer,
        new_gallery: Callable[[], Gallery],
        policy: Callable[[CollectionRecord], ThresholdPolicy],
        self_calibration: bool = True,
        conflict_gate: bool = True,
        quality_aware: bool = True,
    ) -> None:
        self.store = store
        self.analyzer = analyzer
        self.model_id = analyzer.model_id
        self._new_gallery = new_gallery
        self._policy = policy
        self._self_calibration = self_calibration
        self._conflict_gate = conflict_gate
        self._quality_aware = quality_aware
        self._states: dict[int, CollectionState] = {}
        self._lock = threading.RLock()  # guards _states, _seq and the galleries' contents as a whole
        self._seq = 0
        self.drift_repairs = 0
        self._last_calibration = 0.0

    # --- which collections there are ------------------------------------------------

    def recognizer(self, name: str) -> Recognizer:
        state = self._state(name)
        if state.record.model != self.model_id:
            raise ModelMismatch(
                f"collection {name!r} holds faces of model {state.record.model}; this service runs {self.model_id}"
            )
        return Recognizer(
            self.analyzer,
            self.store.collection(state.record.id),
            state,
            self.sync,
            conflict_gate=self._conflict_gate,
            quality_aware=self._quality_aware,
        )

    def state(self, name: str) -> CollectionState:
        return self._state(name)

    def _state(self, name: str) -> CollectionState:
        for state in list(self._states.values()):
            if state.record.name == name:
                return state
        self._refresh()  # made by another process a moment ago?
        for state in list(self._states.values()):
            if state.record.name == name:
                return state
        raise NotFound(f"collection {name!r} does not exist")

    def all(self) -> list[CollectionState]:
        return sorted(self._states.values(), key=lambda s: s.record.id)

    def create(self, name: str, *, target_fpir: float | None = None, threshold: float | None = None) -> CollectionState:
        record = self.store.create_collection(name, self.model_id, target_fpir=target_fpir, threshold=threshold)
        self._refresh()
        return self._states[record.id]

    def delete(self, name: str) -> list[int]:
        removed = self.store.delete_collection(name)
        self.sync()
        self._refresh()
        return removed

    def _refresh(self) -> None:
        """Follow the collections table: add states for new collections (empty galleries: their faces
        arrive through the log, or a rebuild), drop those deleted, take changed settings."""
        records = {r.id: r for r in self.store.list_collections()}
        with self._lock:
            for gone in set(self._states) - set(records):
                del self._states[gone]
            for cid, record in records.items():
                state = self._states.get(cid)
                if state is None:
                    self._states[cid] = self._new_state(record, self._new_gallery())
                elif state.record != record:
                    state.record, state.threshold = record, self._policy(record)
                    if isinstance(state.threshold, GalleryAwareThreshold):
                        state.threshold.prepare(state.self_tail)

    def _new_state(self, record: CollectionRecord, gallery: Gallery) -> CollectionState:
        policy = self._policy(record)
        # Only a threshold that follows an FPIR target has a use for the gallery's own pairs.
        calibration = (
            SelfCalibration(max_pairs=CALIBRATION_PAIRS)
            if self._self_calibration and isinstance(policy, GalleryAwareThreshold)
            else None
        )
        return CollectionState(record, gallery, policy, calibration)

    # --- self-calibration ---------------------------------------------------------------

    def recalibrate(self, force: bool = False) -> int:
        """Publish a new self tail for every collection whose gallery changed, at most every
        RECALIBRATE_EVERY seconds (or now, with `force`). Runs off the request path (the change
        follower, start-up); returns how many collections got a new tail."""
        if not force and time.monotonic() - self._last_calibration < RECALIBRATE_EVERY:
            return 0
        self._last_calibration = time.monotonic()
        done = 0
        for state in list(self._states.values()):
            if state.calibration is None or not state.stale:
                continue
            # Pairs flagged by the identity-conflict gate, by any replica: they arrive with faces
            # (which made this state stale), and are read here, once per new tail.
            flagged = self.store.conflicts(state.record.id)
            with self._lock:
                state.calibration.set_exclusions(flagged)
                tail = state.calibration.tail()
                state.stale = False
            if isinstance(state.threshold, GalleryAwareThreshold):
                state.threshold.prepare(tail)  # the expensive part, outside the lock
            state.self_tail = tail
            done += 1
        return done

    # --- galleries <- database ---------------------------------------------------------

    def rebuild(self, progress: bool = False) -> None:
        """Load every searchable embedding into new galleries, then swap them in.

        Searches use the old galleries until the new ones are complete, and if loading fails the
        old ones stay (with their log position), so a database error never leaves an empty or
        half-filled gallery behind.
        """
        # The log position is read before the rows: whatever changes meanwhile is replayed by
        # the sync below, and replaying is idempotent.
        seq = self.store.last_change()
        records = {r.id: r for r in self.store.list_collections()}
        fresh = {cid: self._new_gallery() for cid, r in records.items() if r.model == self.model_id}
        counts = self.store.count_faces_by_model()
        total = counts.get(self.model_id, 0)
        others = {m: n for m, n in counts.items() if m != self.model_id}
        if others:
            log.warning(
                "%d stored faces were embedded by other models %s and are not searched by %s; "
                "re-enroll them to make them searchable",
                sum(others.values()),
                others,
                self.model_id,
            )
        bar = None
        if progress and total:
            from tqdm import tqdm

            bar = tqdm(total=total, desc="gallery", unit="face")
        loaded = 0
        for ids, owners, collections, vectors in self.store.iter_embeddings(self.model_id):
            for cid in np.unique(collections).tolist():
                if cid in fresh:
                    mask = collections == cid
                    fresh[cid].add(ids[mask], owners[mask], vectors[mask])
            loaded += len(ids)
            if bar is not None:
                bar.update(len(ids))
            elif total >= 100_000:
                log.info("gallery: %d / %d faces loaded", loaded, total)
        if bar is not None:
            bar.close()
        states = {
            cid: self._new_state(record, fresh.get(cid) or self._new_gallery()) for cid, record in records.items()
        }
        for cid, state in states.items():
            if state.calibration is not None and cid in fresh:
                self._calibrate_from(state, cid)
        with self._lock:
            self._states = states
            self._seq = seq
        self.sync()
        self.recalibrate(force=True)
        log.info(
            "galleries ready: %d faces of %s in %d collections",
            sum(s.gallery.size for s in self._states.values()),
            self.model_id,
            len(self._states),
        )

    def _calibrate_from(self, state: CollectionState, cid: int) -> None:
        """Feed a rebuilt collection's calibration with a uniform sample of its faces."""
        assert state.calibration is not None
        rng = np.random.default_rng(cid)
        size = state.gallery.size
        keep = min(1.0, CALIBRATION_SAMPLE / max(size, 1))
        for ids, owners, _, vectors in self.store.iter_embeddings(self.model_id, collection_id=cid):
            mask = rng.random(len(ids)) < keep if keep < 1.0 else np.ones(len(ids), bool)
            state.calibration.add(ids[mask], owners[mask], vectors[mask])
        state.stale = True

    def sync(self) -> int:
        """Apply the database's change log, in order, from the last applied entry; returns entries applied.

        Consecutive entries of one kind are applied together, and the position moves past each
        such run only once it is applied: an error (the database away for a moment) leaves the
        galleries as they were at a known position, and the next sync goes on from there.
        """
        with self._lock:
            applied = 0
            while True:
                changes = self.store.changes_since(self._seq)
                if not changes:
                    if applied:  # a collection may have gone with its faces (or come with them)
                        self._refresh()
                    return applied
                if any(c.collection_id not in self._states for c in changes):
                    self._refresh()
                for run in _runs(changes):
                    mine = [c for c in run if c.model == self.model_id and c.collection_id in self._states]
                    if mine and run[0].op == "add":
                        added = self.store.iter_embeddings(self.model_id, face_ids=[c.face_id for c in mine])
                        for ids, owners, collections, vectors in added:
                            for cid in np.unique(collections).tolist():
                                if cid in self._states:
                                    mask = collections == cid
                                    state = self._states[cid]
                                    state.gallery.add(ids[mask], owners[mask], vectors[mask])
                                    if state.calibration is not None:
                                        state.calibration.add(ids[mask], owners[mask], vectors[mask])
                                        state.stale = True
                    elif mine:
                        by_collection: dict[int, list[int]] = {}
                        for c in mine:
                            by_collection.setdefault(c.collection_id, []).append(c.face_id)
                        for cid, face_ids in by_collection.items():
                            state = self._states[cid]
                            state.gallery.remove(np.array(face_ids, dtype=np.int64))
                            if state.calibration is not None:
                                state.calibration.remove_faces(face_ids)
                                state.stale = True
                    self._seq = run[-1].seq
                    applied += len(run)

    def check(self, attempts: int = 5) -> GalleryStatus:
        """Sync, then compare every gallery with the database at the same log position; rebuild on drift.

        The database's side is read in one statement (per collection: count and id sums of the
        searchable faces, and the log position); when writes move the log on meanwhile, sync and
        compare again.
        """
        self._refresh()  # collections made or deleted elsewhere, even empty ones
        for _ in range(attempts):
            self.sync()
            seq, db = self.store.fingerprints(self.model_id)
            with self._lock:
                if seq != self._seq:
                    continue  # written meanwhile
                mine = {cid: s.gallery.fingerprint() for cid, s in self._states.items() if s.gallery.size}
            theirs = {cid: (f.faces, f.face_id_sum, f.identity_id_sum) for cid, f in db.items()}
            if mine == theirs:
                self.recalibrate()
                return self._status(sum(f[0] for f in theirs.values()), in_sync=True)
            log.error(
                "the galleries (%d faces) differ from the database (%d faces) at change %d: rebuilding",
                sum(f[0] for f in mine.values()),
                sum(f[0] for f in theirs.values()),
                seq,
            )
            self.drift_repairs += 1
            self.rebuild()
        seq, db = self.store.fingerprints(self.model_id)
        searchable = sum(f.faces for f in db.values())
        return self._status(searchable, in_sync=seq == self._seq and self.size == searchable)

    @property
    def size(self) -> int:
        return sum(s.gallery.size for s in list(self._states.values()))

    def fingerprint(self) -> tuple[int, int, int]:
        parts = [s.gallery.fingerprint() for s in list(self._states.values())]
        return (sum(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts))

    def _status(self, searchable: int, *, in_sync: bool) -> GalleryStatus:
        counts = self.store.count_faces_by_model()
        return GalleryStatus(
            size=self.size,
            searchable_in_db=searchable,
            in_sync=in_sync,
            fingerprint=self.fingerprint(),
            other_models={m: n for m, n in counts.items() if m != self.model_id},
            last_change=self._seq,
            drift_repairs=self.drift_repairs,
        )


def _runs(changes: list[FaceChange]) -> Iterator[list[FaceChange]]:
    """Consecutive entries with the same operation, in log order."""
    run: list[FaceChange] = []
    for change in changes:
        if run and change.op != run[0].op:
            yield run
            run = []
        run.append(change)
    if run:
        yield run
