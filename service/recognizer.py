"""Enroll, identify and verify in one collection: the product's logic, with no HTTP and no SQL.

Every method is synchronous and may block (inference, database); the API layer runs them
off the event loop. A `Recognizer` is cheap: `service.collections` hands one out per
request for the collection asked for, over that collection's gallery and threshold.

Consistency: the database is the source of truth. A write commits there first, together
with an entry in the change log; the galleries then apply the log (`Collections.sync`),
which is also how changes made by other processes or replicas arrive.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from service.errors import IdentityConflict, InvalidInput, NoFace
from service.faces import Box, FaceAnalyzer, Rejection
from service.store import CollectionRecord, CollectionStore, FaceRecord, IdentityRecord, NewFace
from service.threshold import ThresholdChoice
from service.timing import Timings
from service.vision.detect import Face
from service.vision.quality import THRESHOLD_MARGIN, FaceQuality

if TYPE_CHECKING:
    from service.collections import CollectionState

log = logging.getLogger(__name__)

# Nearest faces a new face is checked against for the identity-conflict gate: the first names
# the refusal; with allow_conflict, every other identity among them at the threshold is flagged.
CONFLICT_CANDIDATES = 3

__all__ = ["Accepted", "Decision", "EnrollResult", "IdentifiedFace", "IdentifyResult", "Match", "Recognizer"]


@dataclass(frozen=True)
class Accepted:
    image: int
    face_id: int
    box: Box
    score: float
    quality: FaceQuality | None = None


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
    quality: FaceQuality | None = None
    threshold: float | None = None  # this face's: the decision's, plus the margin for its quality


@dataclass(frozen=True)
class Decision:
    threshold: float
    expected_fpir: float | None
    source: str  # "request", "fixed", "collection", "manifest", "gallery" or "gallery-self"
    fpir_interval: tuple[float, float] | None = None  # one-sided 95% bounds on the expected FPIR
    pairs: dict[str, int] = field(default_factory=dict)  # the impostor pairs it rests on, by origin
    extrapolated: bool = False  # beyond every measured pair: the fitted tail alone decided


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


def decision_of(choice: ThresholdChoice) -> Decision:
    return Decision(
        threshold=choice.value,
        expected_fpir=choice.expected_fpir,
        source=choice.source,
        fpir_interval=choice.fpir_interval,
        pairs=dict(choice.pairs),
        extrapolated=choice.extrapolated,
    )


class Recognizer:
    def __init__(
        self,
        analyzer: FaceAnalyzer,
        store: CollectionStore,
        state: CollectionState,
        after_write: Callable[[], object],
        *,
        conflict_gate: bool = True,
        quality_aware: bool = True,
    ) -> None:
        self.analyzer = analyzer
        self.store = store
        self._state = state
        self._after_write = after_write
        self.model_id = analyzer.model_id
        self.conflict_gate = conflict_gate  # enrollment refuses a face that is already someone else
        self.quality_aware = quality_aware  # a poorer face needs a higher similarity; a misaligned one never matches

    @property
    def collection(self) -> CollectionRecord:
        return self._state.record

    @property
    def gallery_size(self) -> int:
        return self._state.gallery.size

    @staticmethod
    def _accepted(chosen: list[tuple[int, Face, FaceQuality]], records: list[FaceRecord]) -> list[Accepted]:
        return [
            Accepted(index, record.id, record.box, round(face.score, 4), quality)
            for (index, face, quality), record in zip(chosen, records, strict=True)
        ]

    def _conflict_gate(
        self,
        chosen: list[tuple[int, Face, FaceQuality]],
        new: list[NewFace],
        probes: NDArray[np.float32],
        rejected: list[Rejection],
        own: int | None,
        allow: bool,
    ) -> tuple[list[tuple[int, Face, FaceQuality]], list[NewFace], list[Rejection], list[tuple[int, float]]]:
        """Find the faces that already match another identity of the collection at the decision
        threshold: one person enrolled twice splits their matches and poisons the threshold's own
        impostor pairs. Unless `allow`, they are left out (IdentityConflict when no face is left);
        with it they are kept, and the clashes come back as (other identity, similarity) to be
        stored with the faces, so that self-calibration leaves that pair of identities out. The
        search is with each face's plain embedding (`probes`), as /identify would search for it."""
        gallery = self._state.gallery
        if not self.conflict_gate or not new or gallery.size == 0:
            return chosen, new, rejected, []
        limit = self.decision(None, gallery.size).threshold
        hits = gallery.search(probes, CONFLICT_CANDIDATES)
        others = [[c for c in row if c.identity_id != own and c.similarity >= limit] for row in hits]
        if not any(others):
            return chosen, new, rejected, []
        if allow:
            return chosen, new, rejected, [(c.identity_id, c.similarity) for row in others for c in row]
        names = self.store.get_identities(sorted({row[0].identity_id for row in others if row}))
        keep_chosen, keep_new, refused = [], [], list(rejected)
        for item, face, clashes in zip(chosen, new, others, strict=True):
            if not clashes:
                keep_chosen.append(item)
                keep_new.append(face)
                continue
            clash = clashes[0]
            other = names.get(clash.identity_id)
            who = f"identity {clash.identity_id}" + (f" ({other.name})" if other else "")
            refused.append(
                Rejection(
                    item[0],
                    IdentityConflict.code,
                    f"the face matches {who} at {clash.similarity:.3f} (threshold {limit:.3f}); "
                    "send allow_conflict=true to enroll it anyway",
                )
            )
        if not keep_new:
            raise IdentityConflict(
                "; ".join(f"image {r.image}: {r.message}" for r in refused if r.code == "identity_conflict")
            )
        return keep_chosen, keep_new, sorted(refused, key=lambda r: r.image), []

    # --- writes -----------------------------------------------------------------

    def enroll(
        self,
        name: str,
        images: Sequence[bytes],
        external_id: str | None = None,
        timings: Timings | None = None,
        *,
        allow_conflict: bool = False,
    ) -> EnrollResult:
        timings = timings or Timings()
        chosen, new, rejected, probes = self.analyzer.new_faces(images, timings)
        chosen, new, rejected, conflicts = self._conflict_gate(chosen, new, probes, rejected, None, allow_conflict)
        with timings.stage("db"):
            identity, records = self.store.create_identity(name, external_id, new, conflicts)
        self._after_write()
        return EnrollResult(identity, self._accepted(chosen, records), rejected)

    def add_faces(
        self,
        identity_id: int,
        images: Sequence[bytes],
        timings: Timings | None = None,
        *,
        allow_conflict: bool = False,
    ) -> EnrollResult:
        timings = timings or Timings()
        self.store.get_identity(identity_id)  # 404 before any inference; the write checks again
        chosen, new, rejected, probes = self.analyzer.new_faces(images, timings)
        chosen, new, rejected, conflicts = self._conflict_gate(
            chosen, new, probes, rejected, identity_id, allow_conflict
        )
        with timings.stage("db"):
            identity, records = self.store.add_faces(identity_id, new, conflicts)
        self._after_write()
        return EnrollResult(identity, self._accepted(chosen, records), rejected)

    def delete_identity(self, identity_id: int) -> list[int]:
        removed = self.store.delete_identity(identity_id)
        self._after_write()
        return removed

    def delete_face(self, identity_id: int, face_id: int) -> None:
        self.store.delete_face(identity_id, face_id)
        self._after_write()

    # --- reads ------------------------------------------------------------------

    def decision(self, threshold: float | None, gallery_size: int) -> Decision:
        if threshold is not None:
            return Decision(threshold, None, "request")
        return decision_of(self._state.threshold.choose(gallery_size, self._state.self_tail))

    def identify(
        self, data: bytes, *, top_k: int = 5, threshold: float | None = None, timings: Timings | None = None
    ) -> IdentifyResult:
        timings = timings or Timings()
        faces, detected = self.analyzer.analyse(data, timings)
        gallery = self._state.gallery  # one gallery for the whole answer, even if a rebuild swaps it meanwhile
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
            limit = decision.threshold
            if self.quality_aware and decision.source != "request" and face.quality is not None:
                limit += THRESHOLD_MARGIN[face.quality.for_recognition]
            # a misaligned face's similarity is no evidence at any threshold, the request's too
            abstain = self.quality_aware and face.quality is not None and face.quality.abstains
            is_match = best is not None and best.similarity >= limit and not abstain
            results.append(
                IdentifiedFace(
                    box=face.box,
                    score=round(face.score, 4),
                    landmarks=face.landmarks,
                    decision="match" if is_match else "unknown",
                    identity=best.identity if is_match and best else None,
                    similarity=best.similarity if best else None,
                    candidates=matches,
                    quality=face.quality,
                    threshold=limit,
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
        policy = self._state.threshold
        a = self.analyzer.largest(data_a, timings, "image_a")
        if data_b is not None:
            b = self.analyzer.largest(data_b, timings, "image_b")
            similarity = float(a.embedding @ b.embedding)
            box_b: Box | None = b.box
            limit = threshold if threshold is not None else policy.pair_threshold()
        else:
            assert identity_id is not None
            with timings.stage("db"):
                vectors = self.store.identity_embeddings(identity_id, self.model_id)
            if len(vectors) == 0:
                raise NoFace(f"identity {identity_id} has no faces enrolled with model {self.model_id}")
            similarity = float((vectors @ a.embedding).max())
            box_b = None
            limit = threshold if threshold is not None else policy.best_of_threshold(len(vectors))
        faces = [a] if data_b is None else [a, b]
        abstain = self.quality_aware and any(f.quality is not None and f.quality.abstains for f in faces)
        matched = similarity >= limit and not abstain  # as identify: a misaligned face never matches
        return VerifyResult(similarity, "match" if matched else "no_match", limit, a.box, box_b)
