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
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from service.errors import FaceIdError, InvalidInput, NoFace
from service.gallery import Gallery
from service.store import FaceRecord, IdentityRecord, NewFace, Store
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
    other_models: dict[str, int] = field(default_factory=dict)
    last_change: int = 0


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
    ) -> None:
        self.detector = detector
        self.embedder = embedder
        self.gallery = gallery
        self.store = store
        self.threshold = threshold
        self.ambiguous_ratio = ambiguous_ratio
        self.pipeline = FacePipeline(detector, max_image_pixels=max_image_pixels, detect_side=detect_side)
        self.model_id = embedder.manifest.model_id
        self._sync_lock = threading.Lock()
        self._seq = 0

    # --- vision -----------------------------------------------------------------

    def _faces(self, data: bytes, timings: Timings) -> tuple[DecodedImage, list[Face]]:
        return self.pipeline.find(data, timings)

    def _embed(self, image_faces: Sequence[tuple[DecodedImage, Face]], timings: Timings) -> NDArray[np.float32]:
        crops = self.pipeline.crops(image_faces, self.embedder.manifest.preprocess.size, timings)
        with timings.stage("embed"):
            return self.embedder.embed(crops)

    def analyse(self, data: bytes, timings: Timings | None = None) -> list[AnalysedFace]:
        """Every face in the image, largest first, with its embedding (one batch)."""
        timings = timings or Timings()
        image, faces = self._faces(data, timings)
        embeddings = self._embed([(image, f) for f in faces], timings)
        return [AnalysedFace(_box(f), f.landmarks, f.score, e) for f, e in zip(faces, embeddings, strict=True)]

    def detect(self, data: bytes, timings: Timings | None = None) -> tuple[list[Face], tuple[int, int]]:
        """Faces, largest first, and the decoded image's (width, height)."""
        image, faces = self._faces(data, timings or Timings())
        return faces, image.size

    def _enrollment_faces(
        self, images: Sequence[bytes], timings: Timings
    ) -> tuple[list[tuple[int, Face, DecodedImage, str]], list[Rejection], list[FaceIdError]]:
        chosen: list[tuple[int, Face, DecodedImage, str]] = []
        rejected: list[Rejection] = []
        errors: list[FaceIdError] = []
        for index, data in enumerate(images):
            try:
                image, faces = self._faces(data, timings)
                largest = enrollment_face(faces, self.ambiguous_ratio)
                chosen.append((index, largest, image, hashlib.sha256(data).hexdigest()))
            except FaceIdError as exc:
                errors.append(exc)
                rejected.append(Rejection(index, exc.code, exc.message))
        return chosen, rejected, errors

    def _new_faces(
        self, images: Sequence[bytes], timings: Timings
    ) -> tuple[list[tuple[int, Face]], list[NewFace], list[Rejection]]:
        if not images:
            raise InvalidInput("at least one image is required")
        chosen, rejected, errors = self._enrollment_faces(images, timings)
        if not chosen:
            if len(errors) == 1:
                raise errors[0]
            raise NoFace("no image gave a usable face: " + "; ".join(f"image {r.image}: {r.code}" for r in rejected))
        embeddings = self._embed([(image, face) for _, face, image, _ in chosen], timings)
        new = [
            NewFace(embedding=e, model=self.model_id, box=_box(face), score=face.score, image_sha256=sha)
            for (_, face, _, sha), e in zip(chosen, embeddings, strict=True)
        ]
        return [(i, f) for i, f, _, _ in chosen], new, rejected

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
        chosen, new, rejected = self._new_faces(images, timings)
        with timings.stage("db"):
            identity, records = self.store.create_identity(name, external_id, new)
        self.sync()
        return EnrollResult(identity, self._accepted(chosen, records), rejected)

    def add_faces(self, identity_id: int, images: Sequence[bytes], timings: Timings | None = None) -> EnrollResult:
        timings = timings or Timings()
        self.store.get_identity(identity_id)  # 404 before any inference
        chosen, new, rejected = self._new_faces(images, timings)
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

    def decision(self, threshold: float | None) -> Decision:
        if threshold is not None:
            return Decision(threshold, None, "request")
        value, fpir, source = self.threshold.threshold(self.gallery.size)
        return Decision(value, fpir, source)

    def identify(
        self, data: bytes, *, top_k: int = 5, threshold: float | None = None, timings: Timings | None = None
    ) -> IdentifyResult:
        timings = timings or Timings()
        faces = self.analyse(data, timings)
        decision = self.decision(threshold)
        if not faces:
            return IdentifyResult([], decision)
        with timings.stage("search"):
            hits = self.gallery.search(np.stack([f.embedding for f in faces]), top_k)
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
        return IdentifyResult(results, decision)

    def verify(
        self,
        data_a: bytes,
        *,
        data_b: bytes | None = None,
        identity_id: int | None = None,
        threshold: float | None = None,
        timings: Timings | None = None,
    ) -> VerifyResult:
        """1:1: is the largest face of image A the same person as image B's, or as an identity?"""
        timings = timings or Timings()
        if (data_b is None) == (identity_id is None):
            raise InvalidInput("give either a second image or an identity_id")
        a = self._largest(data_a, timings, "image_a")
        limit = threshold if threshold is not None else self.threshold.pair_threshold()
        if data_b is not None:
            b = self._largest(data_b, timings, "image_b")
            similarity = float(a.embedding @ b.embedding)
            box_b: Box | None = b.box
        else:
            assert identity_id is not None
            with timings.stage("db"):
                vectors = self.store.identity_embeddings(identity_id, self.model_id)
            if len(vectors) == 0:
                raise NoFace(f"identity {identity_id} has no faces enrolled with model {self.model_id}")
            similarity = float((vectors @ a.embedding).max())
            box_b = None
        return VerifyResult(similarity, "match" if similarity >= limit else "no_match", limit, a.box, box_b)

    def _largest(self, data: bytes, timings: Timings, label: str) -> AnalysedFace:
        image, faces = self._faces(data, timings)
        if not faces:
            raise NoFace(f"no face was found in {label}")
        embedding = self._embed([(image, faces[0])], timings)[0]
        return AnalysedFace(_box(faces[0]), faces[0].landmarks, faces[0].score, embedding)

    # --- gallery <- database ----------------------------------------------------

    def rebuild(self, progress: bool = False) -> None:
        """Load every searchable embedding from the database, streamed in batches."""
        with self._sync_lock:
            self._reload(progress)
        self.sync()
        log.info("gallery ready: %d faces of %s on %s", self.gallery.size, self.model_id, self.gallery.device)

    def _reload(self, progress: bool = False) -> None:
        # The log position is read before the rows: whatever changes meanwhile is
        # replayed by the next sync, and replaying is idempotent.
        seq = self.store.last_change()
        self.gallery.clear()
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
            self.gallery.add(ids, owners, vectors)
            loaded += len(ids)
            if bar is not None:
                bar.update(len(ids))
            elif total >= 100_000:
                log.info("gallery: %d / %d faces loaded", loaded, total)
        if bar is not None:
            bar.close()
        self._seq = seq

    def sync(self) -> int:
        """Apply the database's change log since the last applied entry; returns entries applied."""
        with self._sync_lock:
            applied = 0
            try:
                while True:
                    changes = self.store.changes_since(self._seq)
                    if not changes:
                        return applied
                    mine = [c for c in changes if c.model == self.model_id]
                    removed = np.array([c.face_id for c in mine if c.op == "remove"], dtype=np.int64)
                    added = [c.face_id for c in mine if c.op == "add"]
                    if added:
                        for ids, owners, vectors in self.store.iter_embeddings(self.model_id, face_ids=added):
                            self.gallery.add(ids, owners, vectors)
                    if len(removed):
                        self.gallery.remove(removed)
                    self._seq = changes[-1].seq
                    applied += len(changes)
            except Exception:
                log.exception("applying the change log failed; rebuilding the gallery from the database")
                self._reload()
                return applied

    def gallery_status(self) -> GalleryStatus:
        counts = self.store.count_faces_by_model()
        return GalleryStatus(
            size=self.gallery.size,
            searchable_in_db=counts.get(self.model_id, 0),
            other_models={m: n for m, n in counts.items() if m != self.model_id},
            last_change=self._seq,
        )
