import numpy as np
import pytest

from service.gallery import FaissGallery


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["flat", "flat_fp16", "hnsw"])
def test_search_finds_the_identity_with_its_cosine(kind: str) -> None:
    rng = np.random.default_rng(1)
    vectors = unit(rng, 300, 64)
    gallery = FaissGallery(64, kind=kind, device="cpu")  # type: ignore[arg-type]
    face_ids = np.arange(1, 301, dtype=np.int64)
    owners = (face_ids - 1) // 3 + 1  # 3 faces per identity
    gallery.add(face_ids, owners, vectors)
    assert gallery.size == 300
    hits = gallery.search(vectors[[0, 150]], top_k=5)
    assert hits[0][0].identity_id == 1 and hits[0][0].face_id == 1
    assert hits[1][0].identity_id == 51
    assert hits[0][0].similarity == pytest.approx(1.0, abs=2e-3)
    # top-k counts identities, not faces: five distinct people, best first
    assert len({c.identity_id for c in hits[0]}) == 5
    sims = [c.similarity for c in hits[0]]
    assert sims == sorted(sims, reverse=True)
    expected = max(float(vectors[i] @ vectors[0]) for i in range(3, 300) if owners[i] == hits[0][1].identity_id)
    assert hits[0][1].similarity == pytest.approx(expected, abs=2e-3)


@pytest.mark.parametrize("kind", ["flat", "flat_fp16", "hnsw"])
def test_removed_faces_are_never_returned(kind: str) -> None:
    rng = np.random.default_rng(2)
    vectors = unit(rng, 100, 32)
    gallery = FaissGallery(32, kind=kind, device="cpu")  # type: ignore[arg-type]
    ids = np.arange(1, 101, dtype=np.int64)
    gallery.add(ids, ids, vectors)
    assert gallery.remove(np.arange(1, 41, dtype=np.int64)) == 40
    assert gallery.size == 60
    for hits in gallery.search(vectors[:40], top_k=10):
        assert all(c.face_id > 40 for c in hits)
        assert len(hits) == 10


def test_adding_the_same_face_twice_is_a_no_op_and_search_on_empty_is_empty() -> None:
    gallery = FaissGallery(8, device="cpu")
    assert gallery.search(np.ones((2, 8), np.float32), 3) == [[], []]
    v = unit(np.random.default_rng(3), 2, 8)
    gallery.add(np.array([7, 8]), np.array([1, 1]), v)
    gallery.add(np.array([7, 8]), np.array([1, 1]), v)
    assert gallery.size == 2
    assert len(gallery.search(v[:1], 5)[0]) == 1  # one identity, however many faces
    assert gallery.remove(np.array([99])) == 0


def test_cuda_is_refused_without_a_gpu() -> None:
    with pytest.raises(RuntimeError, match="GPU"):
        FaissGallery(8, device="cuda")


def test_hnsw_a_face_added_again_after_removal_is_found_with_its_new_vector() -> None:
    rng = np.random.default_rng(5)
    vectors = unit(rng, 40, 16)
    gallery = FaissGallery(16, kind="hnsw", device="cpu")
    ids = np.arange(1, 41, dtype=np.int64)
    gallery.add(ids, ids, vectors)
    gallery.remove(np.array([7]))
    replacement = unit(rng, 1, 16)
    gallery.add(np.array([7]), np.array([99]), replacement)
    hits = gallery.search(replacement, top_k=1)[0]
    assert hits[0].face_id == 7 and hits[0].identity_id == 99
    assert hits[0].similarity == pytest.approx(1.0, abs=2e-3)
    old = gallery.search(vectors[6:7], top_k=3)[0]
    assert all(not (c.face_id == 7 and c.similarity > 0.99) for c in old)  # the old vector is gone
    assert gallery.fingerprint() == (40, int(ids.sum()), int(ids.sum()) - 7 + 99)


def test_k_is_capped_where_the_index_limits_it() -> None:
    """FAISS GPU refuses k > 2048: the widening search must stop at the index's limit (here a fake
    limit of 8 on the CPU) instead of failing once one identity holds many faces."""
    rng = np.random.default_rng(6)
    gallery = FaissGallery(16, device="cpu", max_k=8)
    seen: list[int] = []
    real_search = gallery._index.search

    def spy(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        seen.append(k)
        return real_search(x, k)

    gallery._index.search = spy
    centre = unit(rng, 1, 16)
    close = centre + 0.05 * unit(rng, 30, 16)
    close /= np.linalg.norm(close, axis=1, keepdims=True)
    gallery.add(np.arange(1, 31), np.ones(30, dtype=np.int64), close)  # one identity, 30 close faces
    gallery.add(np.arange(31, 41), np.arange(2, 12), unit(rng, 10, 16))  # ten others
    hits = gallery.search(centre, top_k=5)[0]
    assert max(seen) <= 8
    assert hits[0].identity_id == 1 and len(hits) >= 1
