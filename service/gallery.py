"""The in-memory search index over enrolled faces: a cache of the database.

Vectors are L2-normalised, so inner product is cosine similarity. FAISS ids are
face ids; a face -> identity map turns face hits into identity candidates (the best
face of each identity counts). The index is rebuilt from the store at start-up and
follows the store's change log after that.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import faiss
import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)

IndexKind = Literal["flat", "flat_fp16", "hnsw"]


@dataclass(frozen=True)
class Candidate:
    identity_id: int
    face_id: int
    similarity: float


class Gallery(Protocol):
    dim: int

    @property
    def size(self) -> int: ...

    @property
    def device(self) -> str: ...

    def add(
        self, face_ids: NDArray[np.int64], identity_ids: NDArray[np.int64], vectors: NDArray[np.float32]
    ) -> None: ...

    def remove(self, face_ids: NDArray[np.int64]) -> int: ...

    def search(self, vectors: NDArray[np.float32], top_k: int) -> list[list[Candidate]]: ...

    def clear(self) -> None: ...

    def fresh(self) -> Gallery:
        """An empty gallery like this one (same dimension, index kind and device), to be filled
        aside and swapped in: searches never see a half-loaded gallery."""
        ...

    def fingerprint(self) -> tuple[int, int, int]:
        """(faces, sum of face ids, sum of identity ids): compared with the database's."""
        ...


class _RWLock:
    """Many concurrent searches, one writer at a time."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._readers:
                self._cond.wait()
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


GPU_MAX_K = 2048


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class FaissGallery:
    """Exact (`flat`, `flat_fp16`) or approximate (`hnsw`) cosine search.

    HNSW cannot delete, so removed faces are tombstoned and filtered out, and the
    graph is rebuilt once tombstones pass a quarter of the index.
    """

    def __init__(
        self,
        dim: int,
        *,
        kind: IndexKind = "flat",
        device: Literal["auto", "cpu", "cuda"] = "auto",
        hnsw_m: int = 32,
        hnsw_ef_search: int = 128,
        threads: int = 0,
        max_k: int | None = None,
    ) -> None:
        self.dim = dim
        self._device_setting = device
        self.threads = threads  # OpenMP threads per search; 0 leaves FAISS's default
        self.kind = kind
        self.hnsw_m = hnsw_m
        self.hnsw_ef_search = hnsw_ef_search
        self._lock = _RWLock()
        self._owner: dict[int, int] = {}  # face id -> identity id
        self._tombstones: set[int] = set()
        self._use_gpu = device == "cuda" or (device == "auto" and gpu_available() and kind == "flat")
        if device == "cuda" and not gpu_available():
            raise RuntimeError("gallery device 'cuda' requested but FAISS has no GPU support or sees no GPU")
        self._gpu_res = faiss.StandardGpuResources() if self._use_gpu else None
        # FAISS GPU refuses searches with k over 2048 (GPU_MAX_SELECTION_K).
        self.max_k = max_k if max_k is not None else (GPU_MAX_K if self._use_gpu else None)
        self._index = self._new_index()
        self._face_sum = 0
        self._owner_sum = 0

    def fresh(self) -> FaissGallery:
        return FaissGallery(
            self.dim,
            kind=self.kind,
            device=self._device_setting,
            hnsw_m=self.hnsw_m,
            hnsw_ef_search=self.hnsw_ef_search,
            threads=self.threads,
            max_k=self.max_k,
        )

    def fingerprint(self) -> tuple[int, int, int]:
        with self._lock.read():
            return len(self._owner), self._face_sum, self._owner_sum

    @property
    def device(self) -> str:
        return "cuda" if self._use_gpu else "cpu"

    def _new_index(self) -> Any:  # faiss's SWIG classes: IndexIDMap2 / IndexIDMap
        if self.kind == "flat":
            inner: Any = faiss.IndexFlatIP(self.dim)
            if self._gpu_res is not None:
                inner = faiss.index_cpu_to_gpu(self._gpu_res, 0, inner)
        elif self.kind == "flat_fp16":
            inner = faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        elif self.kind == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = 80
            inner.hnsw.efSearch = self.hnsw_ef_search
        else:
            raise ValueError(f"unknown gallery index {self.kind!r}; choose flat, flat_fp16 or hnsw")
        # GPU flat indexes take ids through IndexIDMap (no reconstruct); CPU ones IDMap2.
        return faiss.IndexIDMap(inner) if self._gpu_res is not None else faiss.IndexIDMap2(inner)

    @property
    def size(self) -> int:
        return len(self._owner)

    def clear(self) -> None:
        with self._lock.write():
            self._index = self._new_index()
            self._owner.clear()
            self._tombstones.clear()
            self._face_sum = self._owner_sum = 0

    def add(self, face_ids: NDArray[np.int64], identity_ids: NDArray[np.int64], vectors: NDArray[np.float32]) -> None:
        if len(face_ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(face_ids), self.dim)
        face_ids = np.ascontiguousarray(face_ids, dtype=np.int64)
        with self._lock.write():
            fresh = np.array([f not in self._owner for f in face_ids.tolist()], dtype=bool)
            if not fresh.all():  # idempotent: replaying a change log must not duplicate
                face_ids, identity_ids, vectors = face_ids[fresh], identity_ids[fresh], vectors[fresh]
            if len(face_ids) == 0:
                return
            if self._tombstones and not self._tombstones.isdisjoint(face_ids.tolist()):
                # HNSW still holds the removed vector under this id: purge it first, or the
                # face would stay filtered out (or match with its old vector).
                self._rebuild_hnsw()
            owners = np.asarray(identity_ids).tolist()
            self._index.add_with_ids(vectors, face_ids)
            self._owner.update(zip(face_ids.tolist(), owners, strict=True))
            self._face_sum += int(face_ids.sum())
            self._owner_sum += sum(owners)

    def remove(self, face_ids: NDArray[np.int64]) -> int:
        with self._lock.write():
            ids = [int(f) for f in dict.fromkeys(face_ids.tolist()) if int(f) in self._owner]
            if not ids:
                return 0
            for f in ids:
                self._owner_sum -= self._owner.pop(f)
                self._face_sum -= f
            if self.kind == "hnsw":
                self._tombstones.update(ids)
                if len(self._tombstones) * 4 > self._index.ntotal:
                    self._rebuild_hnsw()
            elif self._gpu_res is not None:
                self._rebuild_from_cpu_copy(ids)
            else:
                self._index.remove_ids(np.asarray(ids, dtype=np.int64))
        return len(ids)

    def _rebuild_hnsw(self) -> None:
        inner = faiss.downcast_index(self._index.index)
        keep_ids = faiss.vector_to_array(self._index.id_map)
        vectors = inner.reconstruct_n(0, inner.ntotal)
        mask = np.array([i not in self._tombstones for i in keep_ids.tolist()], dtype=bool)
        self._index = self._new_index()
        self._index.add_with_ids(vectors[mask], keep_ids[mask])
        self._tombstones.clear()

    def _rebuild_from_cpu_copy(self, removed: list[int]) -> None:
        cpu = faiss.index_gpu_to_cpu(self._index.index)
        ids = faiss.vector_to_array(self._index.id_map)
        vectors = cpu.reconstruct_n(0, cpu.ntotal)
        mask = ~np.isin(ids, np.asarray(removed, dtype=np.int64))
        self._index = self._new_index()
        self._index.add_with_ids(vectors[mask], ids[mask])

    def search(self, vectors: NDArray[np.float32], top_k: int) -> list[list[Candidate]]:
        """Top-k identities per query, each with its best face's cosine, best first."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if self.threads:
            # OpenMP's thread count belongs to the calling thread: set it in whichever
            # worker thread runs this search.
            faiss.omp_set_num_threads(self.threads)
        with self._lock.read():
            total = self._index.ntotal
            if total == 0 or len(vectors) == 0:
                return [[] for _ in range(len(vectors))]
            # Several faces per identity (and tombstones) mean k faces can hold fewer
            # than k identities: widen until enough identities or the whole index.
            # On the GPU k stops at max_k: an identity with more faces than that, all closer than
            # the next person, can then leave fewer than top_k candidates.
            widest = min(total, self.max_k) if self.max_k else total
            k = min(widest, max(top_k * 4, top_k + len(self._tombstones), 16))
            while True:
                sims, ids = self._index.search(vectors, k)
                results = [self._group(sims[i], ids[i], top_k) for i in range(len(vectors))]
                if k >= widest or all(len(r) >= top_k for r in results):
                    return results
                k = min(widest, k * 4)

    def _group(self, sims: NDArray[np.float32], ids: NDArray[np.int64], top_k: int) -> list[Candidate]:
        best: dict[int, Candidate] = {}
        for sim, face_id in zip(sims.tolist(), ids.tolist(), strict=True):
            if face_id < 0 or face_id in self._tombstones:
                continue
            owner = self._owner.get(face_id)
            if owner is None or owner in best:
                continue
            best[owner] = Candidate(owner, face_id, float(sim))
            if len(best) == top_k:
                break
        return list(best.values())
