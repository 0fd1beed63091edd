"""Gallery self-calibration: the gallery's own between-identity scores as impostor pairs.

The enrolled gallery is a set of real people from the user's own domain (their
cameras, lighting and demographics), and the scores between *different* enrolled
identities are exactly the impostor pairs an open-set threshold needs. N identities
give N(N-1)/2 pairs of people. `SelfCalibration` keeps a sample of them as the gallery
grows and hands `service.threshold` a `SelfTail`, which pools it with the manifest's
record (each weighted by its pair count).

Rules, each stated once:

- Incremental: `add` compares each new face with at most `per_face` faces of *other*
  identities already kept (a uniform sample of them beyond that), so one update costs
  O(new x min(existing, per_face)); the reference faces are a reservoir of at most
  `reference_cap`, and the kept pairs at most `max_pairs` (beyond, every pair is kept
  with probability halved, old and new alike, so the sample stays uniform).
- Duplicates: a pair of identities is left out entirely when it is flagged
  (`exclude`, e.g. by an identity-conflict gate) or when any of its face pairs scores
  at or above `duplicate_bound`: one person enrolled twice, not two people.
- Outliers: of the remaining pairs of identities, the top `trim_fraction` by their best
  score are trimmed (floor, so none below 1 / trim_fraction pairs of people): near
  duplicates that escaped the bound. Trimming real look-alikes would make the tail
  lighter, so the fraction is small (0.1%).

Pure logic: numpy in, numbers out; no HTTP, no SQL. Not thread-safe: the owner (one per
collection) updates it off the request path and publishes `tail()` snapshots.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray

from service.threshold import GRID, PairCounts, SelfTail

DUPLICATE_BOUND = 0.55  # SFace: above every impostor pair measured (max 0.43), below most same-person pairs
TRIM_FRACTION = 0.001


class SelfCalibration:
    def __init__(
        self,
        *,
        duplicate_bound: float = DUPLICATE_BOUND,
        trim_fraction: float = TRIM_FRACTION,
        per_face: int = 2000,
        reference_cap: int = 20000,
        max_pairs: int = 2_000_000,
        grid: tuple[float, ...] = GRID,
        seed: int = 0,
    ) -> None:
        self.duplicate_bound = duplicate_bound
        self.trim_fraction = trim_fraction
        self.per_face = per_face
        self.reference_cap = reference_cap
        self.max_pairs = max_pairs
        self.grid = grid
        self._rng = np.random.default_rng(seed)
        self._ref_faces = np.zeros(reference_cap, np.int64)  # the first _refs rows are in use
        self._ref_owners = np.zeros(reference_cap, np.int64)
        self._ref_vectors: NDArray[np.float32] | None = None
        self._refs = 0
        self._seen = 0  # faces offered to the reservoir
        self._keep = 1.0  # probability with which a pair is kept
        self._pairs: list[NDArray[np.float64]] = []  # rows (face_a, face_b, identity_a, identity_b, score)
        self._count = 0
        self._excluded: set[tuple[int, int]] = set()
        self._tail: SelfTail | None = None

    # --- updates ---------------------------------------------------------------------

    def add(self, face_ids: Iterable[int], identity_ids: Iterable[int], vectors: NDArray[np.floating]) -> None:
        """New faces (rows of unit vectors), compared with the kept faces of other identities."""
        faces = np.asarray(list(face_ids), dtype=np.int64)
        owners = np.asarray(list(identity_ids), dtype=np.int64)
        vecs = np.asarray(vectors, dtype=np.float32).reshape(len(faces), -1)
        if len(faces) != len(owners):
            raise ValueError("face_ids, identity_ids and vectors must have as many rows")
        for start in range(0, len(faces), 256):
            self._add_batch(faces[start : start + 256], owners[start : start + 256], vecs[start : start + 256])
        self._tail = None

    def _add_batch(self, faces: NDArray[np.int64], owners: NDArray[np.int64], vecs: NDArray[np.float32]) -> None:
        if self._ref_vectors is None:
            self._ref_vectors = np.zeros((self.reference_cap, vecs.shape[1]), np.float32)
        # Pairs among the new faces themselves, then against the kept references.
        blocks = []
        if len(faces) > 1:
            i, j = np.triu_indices(len(faces), 1)
            blocks.append((faces[i], faces[j], owners[i], owners[j], np.einsum("ij,ij->i", vecs[i], vecs[j])))
        if self._refs:
            refs = np.arange(self._refs)
            if len(refs) > self.per_face:
                refs = np.sort(self._rng.choice(len(refs), self.per_face, replace=False))
            sims = vecs @ self._ref_vectors[refs].T  # (new, refs)
            a, b = np.meshgrid(np.arange(len(faces)), refs, indexing="ij")
            blocks.append(
                (
                    faces[a.ravel()],
                    self._ref_faces[b.ravel()],
                    owners[a.ravel()],
                    self._ref_owners[b.ravel()],
                    sims.ravel(),
                )
            )
        for fa, fb, oa, ob, score in blocks:
            different = oa != ob
            keep = different & (self._rng.random(len(score)) < self._keep)
            lo, hi = np.minimum(oa, ob), np.maximum(oa, ob)
            rows = np.stack([fa, fb, lo, hi, score], axis=1)[keep].astype(np.float64)
            if len(rows):
                self._pairs.append(rows)
                self._count += len(rows)
        while self._count > self.max_pairs:
            self._keep /= 2
            merged = self._merged()
            merged = merged[self._rng.random(len(merged)) < 0.5]
            self._pairs, self._count = [merged], len(merged)
        for face, owner, vec in zip(faces.tolist(), owners.tolist(), vecs, strict=True):
            self._offer_reference(face, owner, vec)

    def _offer_reference(self, face: int, owner: int, vec: NDArray[np.float32]) -> None:
        assert self._ref_vectors is not None
        self._seen += 1
        if self._refs < self.reference_cap:
            slot, self._refs = self._refs, self._refs + 1
        else:
            slot = int(self._rng.integers(0, self._seen))  # reservoir sampling: every face equally likely kept
        if slot < self.reference_cap:
            self._ref_faces[slot], self._ref_owners[slot], self._ref_vectors[slot] = face, owner, vec

    def remove_faces(self, face_ids: Iterable[int]) -> None:
        """Faces deleted from the gallery: their pairs no longer count."""
        gone = np.asarray(list(face_ids), dtype=np.int64)
        if not len(gone):
            return
        merged = self._merged()
        if len(merged):
            hit = np.isin(merged[:, 0].astype(np.int64), gone) | np.isin(merged[:, 1].astype(np.int64), gone)
            self._pairs, self._count = [merged[~hit]], int((~hit).sum())
        keep = np.nonzero(~np.isin(self._ref_faces[: self._refs], gone))[0]
        n = len(keep)
        self._ref_faces[:n], self._ref_owners[:n] = self._ref_faces[keep], self._ref_owners[keep]
        if self._ref_vectors is not None:
            self._ref_vectors[:n] = self._ref_vectors[keep]
        self._refs = n
        self._tail = None

    def exclude(self, identity_a: int, identity_b: int) -> None:
        """A pair of identities flagged as one person enrolled twice."""
        self._excluded.add((min(identity_a, identity_b), max(identity_a, identity_b)))
        self._tail = None

    def set_exclusions(self, pairs: Iterable[tuple[int, int]]) -> None:
        """All the flagged pairs of identities at once (the database's list), replacing any before."""
        excluded = {(min(a, b), max(a, b)) for a, b in pairs}
        if excluded != self._excluded:
            self._excluded = excluded
            self._tail = None

    def _merged(self) -> NDArray[np.float64]:
        if not self._pairs:
            return np.zeros((0, 5))
        if len(self._pairs) > 1:
            self._pairs = [np.concatenate(self._pairs)]
        return self._pairs[0]

    # --- the tail --------------------------------------------------------------------

    @property
    def pairs_kept(self) -> int:
        return self._count

    def scores(self) -> tuple[NDArray[np.float64], int, int, int]:
        """(kept impostor scores, pairs of identities behind them, dropped as duplicates, trimmed)."""
        merged = self._merged()
        if not len(merged):
            return np.zeros(0), 0, 0, 0
        # One int64 key per pair of identities: a 1-D unique is ~10x cheaper than unique rows.
        keys, inverse = np.unique(_pair_key(merged[:, 2:4].astype(np.int64)), return_inverse=True)
        inverse = inverse.ravel()
        best = np.full(len(keys), -np.inf)
        np.maximum.at(best, inverse, merged[:, 4])
        excluded = np.zeros(len(keys), bool)
        if self._excluded:
            flagged = np.array(sorted(self._excluded), dtype=np.int64)
            excluded = np.isin(keys, _pair_key(flagged))
        duplicate = excluded | (best >= self.duplicate_bound)
        remaining = np.nonzero(~duplicate)[0]
        trim = int(self.trim_fraction * len(remaining))
        trimmed = remaining[np.argsort(best[remaining])[len(remaining) - trim :]] if trim else np.zeros(0, np.int64)
        drop = duplicate.copy()
        drop[trimmed] = True
        kept = ~drop[inverse]
        return merged[kept, 4], int((~drop).sum()), int(duplicate.sum()), trim

    def tail(self) -> SelfTail:
        """A snapshot for `GalleryAwareThreshold.choose` (cached until the next update)."""
        if self._tail is None:
            scores, identity_pairs, duplicates, trimmed = self.scores()
            merged = self._merged()
            owners = np.concatenate([self._ref_owners[: self._refs], merged[:, 2], merged[:, 3]]).astype(np.int64)
            self._tail = SelfTail(
                counts=PairCounts.of(scores, self.grid),
                identities=len(np.unique(owners)),
                identity_pairs=identity_pairs,
                dropped_duplicates=duplicates,
                trimmed=trimmed,
            )
        return self._tail


def _pair_key(pairs: NDArray[np.int64]) -> NDArray[np.int64]:
    """One int64 per (identity, identity) row; ids within the int32 range."""
    return pairs[:, 0] * (1 << 32) + (pairs[:, 1] & 0xFFFFFFFF)
