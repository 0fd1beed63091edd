"""Enroll, identify, verify and detect: the product's logic, with no HTTP and no SQL.

Every method is synchronous and may block (inference, database); the API layer
runs them off the event loop.

Consistency: the database is the source of truth. A write commits there first,
together with an entry in the change log; the gallery then applies the log
(`sync`). The same path applies changes made by other processes or replicas, and
if applying ever fails the gallery is rebuilt from the database, so the two cannot
stay apart.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from service.errors import FaceIdError, InvalidInput, NoFace
from service.gallery import Gallery
from service.store import FaceRecord, IdentityRecord, NewFace, Store
from service.store.repository import FaceChange
from service.threshold import ThresholdPolicy
from service.timing import Timings
from service.vision.decode import DecodedImage
from service.vision.detect import Detector, Face
from service.vision.embed import Embedder
from service.vision.pipeline import FacePipeline, enrollment_face

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class AnalysedFace:
    box: Box
    landmarks: NDArray[np.float32]
    score: float
    embedding: NDArray[np.float32]


@dataclass(frozen=True)
class Rejection:
    image: int
    code: str
    message: str


@dataclass(frozen=True)
class Accepted:
    image: int
    face_id: int
    box: Box
    score: float


@dataclass(frozen=True)
class EnrollResult:
    identity: IdentityRecord
    accepted: list[Accepted]
    rejected: list[Rejection]


@dataclass(frozen=True)
class Match:
    identity: IdentityRecord
    similarity: float


@dataclass(frozen=True)
class IdentifiedFace:
    box: Box
    score: float
    landmarks: NDArray[np.float32]
    decision: str  # "match" | "unknown"
    identity: IdentityRecord | None
    similarity: float | None
    candidates: list[Match]


@dataclass(frozen=True)
class Decision:
    threshold: float
    expected_fpir: float | None
    source: str  # "request", "fixed", "manifest" or "gallery"


@dataclass(frozen=True)
class IdentifyResult:
    faces: list[IdentifiedFace]
    decision: Decision
    gallery_size: int
    faces_detected: int  # faces found in the image; only the largest `max_faces` are searched


@dataclass(frozen=True)
class VerifyResult:
    similarity: float
    decision: str
    threshold: float
    box_a: Box
    box_b: Box | None


@dataclass
class GalleryStatus:
    size: int
    searchable_in_db: int
    in_sync: bool
    other_models: dict[str, int] = field(default_factory=dict)
    last_change: int = 0
    drift_repairs: int = 0  # rebuilds since start because the gallery differed from the database


def _box(face: Face) -> Box:
    x1, y1, x2, y2 = (round(float(v), 1) for v in face.box)
    return (x1, y1, x2, y2)


class Recognizer:
    def __init__(
        self,
        *,
        detector: Detector,
        embedder: Embedder,
        gallery: Gallery,
        store: Store,
        threshold: ThresholdPolicy,
        max_image_pixels: int,
        ambiguous_ratio: float = 0.5,
        detect_side: int = 640,
        max_faces: int = 32,
    ) -> None:
        self.detector = detector
        self.embedder = embedder
        self.gallery = gallery
        self.store = store
        self.threshold = threshold
        self.ambiguous_ratio = ambiguous_ratio
        self.max_faces = max_faces
        self.pipeline = FacePipeline(detector, max_image_pixels=max_image_pixels, detect_side=detect_side)
        self.model_id = embedder.manifest.model_id
        self._sync_lock = threading.Lock()
        self._seq = 0
        self.drift_repairs = 0

    # --- vision -----------------------------------------------------------------

    def _faces(self, data: bytes, timings: Timings) -> tuple[DecodedImage, list[Face]]:
        return self.pipeline.find(data, timings)

    def _embed(self, image_faces: Sequence[tuple[DecodedImage, Face]], timings: Timings) -> NDArray[np.float32]:
        crops = self.pipeline.crops(image_faces, self.embedder.manifest.preprocess.size, timings)
        with timings.stage("embed"):
            return self.embedder.embed(crops)

    def analyse(self, data: bytes, timings: Timings | None = None) -> tuple[list[AnalysedFace], int]:
        """The image's faces, largest first, at most `max_faces` of them, each with its embedding (one
        batch); and how many faces were found in all."""
        timings = timings or Timings()
        image, found = self._faces(data, timings)
        faces = found[: self.max_faces]
        embeddings = self._embed([(image, f) for f in faces], timings)
        analysed = [AnalysedFace(_box(f), f.landmarks, f.score, e) for f, e in zip(faces, embeddings, strict=True)]
        return analysed, len(found)

    def detect(self, data: bytes, timings: Timings | None = None) -> tuple[list[Face], int, tuple[int, int]]:
        """The largest `max_faces` faces, largest first; how many were found; the image's (width, height)."""
        image, found = self._faces(data, timings or Timings())
        return found[: self.max_faces], len(found), image.size

    def _enrollment_crops(
        self, images: Sequence[bytes], timings: Timings
    ) -> tuple[list[tuple[int, Face, str]], list[NDArray[np.uint8]], list[Rejection], list[FaceIdError]]:
        """Per image, the labelled face and its aligned crop. Images are handled one at a time and
        only the crop is kept, so a request holds one decoded image at a time, whatever its count."""
        chosen: list[tuple[int, Face, str]] = []
        crops: list[NDArray[np.uint8]] = []
        rejected: list[Rejection] = []
        errors: list[FaceIdError] = []
        size = self.embedder.manifest.preprocess.size
        for index, data in enumerate(images):
            try:
                image, faces = self._faces(data, timings)
                largest = enrollment_face(faces, self.ambiguous_ratio)
                crops.append(self.pipeline.crops([(image, largest)], size, timings)[0])
                chosen.append((index, largest, hashlib.sha256(data).hexdigest()))
            except FaceIdError as exc:
                errors.append(exc)
                rejected.append(Rejection(index, exc.code, exc.message))
            image = None  # type: ignore[assignment]  # the decoded pixels go before the next image
        return chosen, crops, rejected, errors

    def new_faces(
        self, images: Sequence[bytes], timings: Timings | None = None
    ) -> tuple[list[tuple[int, Face]], list[NewFace], list[Rejection]]:
        """Faces to store for one person's images, and the images rejected (with the reason).
        Raises when no image gives a face."""
        timings = timings or Timings()
        if not images:
            raise InvalidInput("at least one image is required")
        chosen, crops, rejected, errors = self._enrollment_crops(images, timings)
        if not chosen:
            if len(errors) == 1:
                raise errors[0]
            raise NoFace("no image gave a usable face: " + "; ".join(f"image {r.image}: {r.code}" for r in rejected))
        with timings.stage("embed"):
            embeddings = self.embedder.embed(crops)
        new = [
            NewFace(embedding=e, model=self.model_id, box=_box(face), score=face.score, image_sha256=sha)
            for (_, face, sha), e in zip(chosen, embeddings, strict=True)
        ]
        return [(i, f) for i, f, _ in chosen], new, rejected

    @staticmethod
    def _accepted(chosen: list[tuple[int, Face]], records: list[FaceRecord]) -> list[Accepted]:
        return [
            Accepted(index, record.id, record.box, round(face.score, 4))
            for (index, face), record in zip(chosen, records, strict=True)
        ]

    # --- writes -----------------------------------------------------------------

    def enroll(
        self, name: str, images: Sequence[bytes], external_id: str | None = None, timings: Timings | None = None
    ) -> EnrollResult:
        timings = timings or Timings()
        chosen, new, rejected = self.new_faces(images, timings)
        with timings.stage("db"):
            identity, records = self.store.create_identity(name, external_id, new)
        self.sync()
        return EnrollResult(identity, self._accepted(chosen, records), rejected)

    def add_faces(self, identity_id: int, images: Sequence[bytes], timings: Timings | None = None) -> EnrollResult:
        timings = timings or Timings()
        self.store.get_identity(identity_id)  # 404 before any inference; the write checks again
        chosen, new, rejected = self.new_faces(images, timings)
        with timings.stage("db"):
            identity, records = self.store.add_faces(identity_id, new)
        self.sync()
        return EnrollResult(identity, self._accepted(chosen, records), rejected)

    def delete_identity(self, identity_id: int) -> None:
        self.store.delete_identity(identity_id)
        self.sync()

    def delete_face(self, identity_id: int, face_id: int) -> None:
        self.store.delete_face(identity_id, face_id)
        self.sync()

    # --- reads ------------------------------------------------------------------

    def decision(self, threshold: float | None, gallery_size: int) -> Decision:
        if threshold is not None:
            return Decision(threshold, None, "request")
        value, fpir, source = self.threshold.threshold(gallery_size)
        return Decision(value, fpir, source)

    def identify(
        self, data: bytes, *, top_k: int = 5, threshold: float | None = None, timings: Timings | None = None
    ) -> IdentifyResult:
        timings = timings or Timings()
        faces, detected = self.analyse(data, timings)
        gallery = self.gallery  # one gallery for the whole answer, even if a rebuild swaps it meanwhile
        decision = self.decision(threshold, gallery.size)
        if not faces:
            return IdentifyResult([], decision, gallery.size, detected)
        with timings.stage("search"):
            hits = gallery.search(np.stack([f.embedding for f in faces]), top_k)
        with timings.stage("db"):
            identities = self.store.get_identities(sorted({c.identity_id for row in hits for c in row}))
        results = []
        for face, candidates in zip(faces, hits, strict=True):
            matches = [
                Match(identities[c.identity_id], c.similarity) for c in candidates if c.identity_id in identities
            ]
            best = matches[0] if matches else None
            is_match = best is not None and best.similarity >= decision.threshold
            results.append(
                IdentifiedFace(
                    box=face.box,
                    score=round(face.score, 4),
                    landmarks=face.landmarks,
                    decision="match" if is_match else "unknown",
                    identity=best.identity if is_match and best else None,
                    similarity=best.similarity if best else None,
                    candidates=matches,
                )
            )
        return IdentifyResult(results, decision, gallery.size, detected)

    def verify(
        self,
        data_a: bytes,
        *,
        data_b: bytes | None = None,
        identity_id: int | None = None,
        threshold: float | None = None,
        timings: Timings | None = None,
    ) -> VerifyResult:
        """1:1: is the largest face of image A the same person as image B's, or as an identity?

        Against an identity with K faces the best of K comparisons counts, and a stranger's best of
        K passes a fixed bar more often than one comparison does: the threshold is raised for K so
        that the false-accept rate stays the single pair's (as identify does for the gallery size).
        """
        timings = timings or Timings()
        if (data_b is None) == (identity_id is None):
            raise InvalidInput("give either a second image or an identity_id")
        a = self._largest(data_a, timings, "image_a")
        if data_b is not None:
            b = self._largest(data_b, timings, "image_b")
            similarity = float(a.embedding @ b.embedding)
            box_b: Box | None = b.box
            limit = threshold if threshold is not None else self.threshold.pair_threshold()
        else:
            assert identity_id is not None
            with timings.stage("db"):
                vectors = self.store.identity_embeddings(identity_id, self.model_id)
            if len(vectors) == 0:
                raise NoFace(f"identity {identity_id} has no faces enrolled with model {self.model_id}")
            similarity = float((vectors @ a.embedding).max())
            box_b = None
            limit = threshold if threshold is not None else self.threshold.best_of_threshold(len(vectors))
        return VerifyResult(similarity, "match" if similarity >= limit else "no_match", limit, a.box, box_b)

    def _largest(self, data: bytes, timings: Timings, label: str) -> AnalysedFace:
        image, faces = self._faces(data, timings)
        if not faces:
            raise NoFace(f"no face was found in {label}")
        embedding = self._embed([(image, faces[0])], timings)[0]
        return AnalysedFace(_box(faces[0]), faces[0].landmarks, faces[0].score, embedding)

    # --- gallery <- database ----------------------------------------------------

    def rebuild(self, progress: bool = False) -> None:
        """Load every searchable embedding from the database into a new gallery, then swap it in.

        Searches use the old gallery until the new one is complete, and if loading fails the old
        one stays (with its log position), so a database error never leaves an empty or
        half-filled gallery behind.
        """
        fresh = self.gallery.fresh()
        # The log position is read before the rows: whatever changes meanwhile is replayed by
        # the sync below, and replaying is idempotent.
        seq = self.store.last_change()
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
        for ids, owners, vectors in self.store.iter_embeddings(self.model_id):
            fresh.add(ids, owners, vectors)
            loaded += len(ids)
            if bar is not None:
                bar.update(len(ids))
            elif total >= 100_000:
                log.info("gallery: %d / %d faces loaded", loaded, total)
        if bar is not None:
            bar.close()
        with self._sync_lock:
            self.gallery = fresh
            self._seq = seq
        self.sync()
        log.info("gallery ready: %d faces of %s on %s", fresh.size, self.model_id, fresh.device)

    def sync(self) -> int:
        """Apply the database's change log, in order, from the last applied entry; returns entries applied.

        Consecutive entries of one kind are applied together, and the position moves past each
        such run only once it is applied: an error (the database away for a moment) leaves the
        gallery as it was at a known position, and the next sync goes on from there.
        """
        with self._sync_lock:
            applied = 0
            while True:
                changes = self.store.changes_since(self._seq)
                if not changes:
                    return applied
                for run in _runs(changes):
                    mine = [c.face_id for c in run if c.model == self.model_id]
                    if mine and run[0].op == "add":
                        for ids, owners, vectors in self.store.iter_embeddings(self.model_id, face_ids=mine):
                            self.gallery.add(ids, owners, vectors)
                    elif mine:
                        self.gallery.remove(np.array(mine, dtype=np.int64))
                    self._seq = run[-1].seq
                    applied += len(run)

    def check(self, attempts: int = 5) -> GalleryStatus:
        """Sync, then compare the gallery with the database at the same log position; rebuild on drift.

        The database's side is read in one statement (count and id sums of the searchable faces,
        and the log position); when writes move the log on meanwhile, sync and compare again.
        """
        for _ in range(attempts):
            self.sync()
            db = self.store.fingerprint(self.model_id)
            with self._sync_lock:
                if db.seq != self._seq:
                    continue  # written meanwhile
                mine = self.gallery.fingerprint()
            if mine == (db.faces, db.face_id_sum, db.identity_id_sum):
                return self._status(db.faces, in_sync=True)
            log.error(
                "the gallery (%d faces) differs from the database (%d faces) at change %d: rebuilding",
                mine[0],
                db.faces,
                db.seq,
            )
            self.drift_repairs += 1
            self.rebuild()
        db = self.store.fingerprint(self.model_id)
        return self._status(db.faces, in_sync=db.seq == self._seq and self.gallery.size == db.faces)

    def _status(self, searchable: int, *, in_sync: bool) -> GalleryStatus:
        counts = self.store.count_faces_by_model()
        return GalleryStatus(
            size=self.gallery.size,
            searchable_in_db=searchable,
            in_sync=in_sync,
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
