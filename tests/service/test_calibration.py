"""Gallery self-calibration on real photos: ORL s1-s10 and the fixtures' photos are the
gallery, ORL s11-s20 the held-out strangers."""

from __future__ import annotations

import numpy as np
import pytest

from service.calibration import SelfCalibration
from service.threshold import GalleryAwareThreshold, PairCounts
from service.vision.align import align_face
from service.vision.decode import decode_image
from service.vision.detect import YuNetDetector
from service.vision.embed import OnnxEmbedder
from service.vision.models import load_embedder_model
from tests.conftest import ORL, PHOTOS

Gallery = tuple[np.ndarray, np.ndarray, np.ndarray]  # (face ids, identity ids, unit vectors)


@pytest.fixture(scope="module")
def faces(detector: YuNetDetector, embedder: OnnxEmbedder) -> dict[str, np.ndarray]:
    """Embeddings of every ORL s1-s20 photo (by person) and every face in the fixtures' photos."""
    crops, owners = [], []
    for person in range(1, 21):
        for n in range(1, 11):
            image = decode_image((ORL / f"s{person}" / f"{n}.pgm").read_bytes())
            crops.append(align_face(image, detector.detect(image)[0].landmarks))
            owners.append(person)
    for index, path in enumerate(sorted(PHOTOS.iterdir())):
        image = decode_image(path.read_bytes())
        for k, face in enumerate(detector.detect(image)):
            crops.append(align_face(image, face.landmarks))
            # Every face is its own person but the two of Obama (obama.jpg, obama2.jpg).
            owners.append(1000 if path.stem.startswith("obama") else 100 + 10 * index + k)
    vectors = np.concatenate([embedder.embed(crops[i : i + 64]) for i in range(0, len(crops), 64)])
    return {"vectors": vectors, "owners": np.array(owners)}


@pytest.fixture(scope="module")
def gallery(faces: dict[str, np.ndarray]) -> Gallery:
    keep = (faces["owners"] <= 10) | (faces["owners"] >= 100)  # not the strangers s11-s20
    vectors, owners = faces["vectors"][keep], faces["owners"][keep]
    return np.arange(len(owners)), owners, vectors


def brute_force(ids: np.ndarray, owners: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(len(ids), 1)
    different = owners[i] != owners[j]
    return np.einsum("ij,ij->i", vectors[i[different]], vectors[j[different]])


def test_incremental_pairs_equal_every_between_identity_pair(gallery: Gallery) -> None:
    ids, owners, vectors = gallery
    calibration = SelfCalibration()
    for chunk in np.array_split(np.arange(len(ids)), 4):  # the gallery grows in four steps
        calibration.add(ids[chunk], owners[chunk], vectors[chunk])
    tail = calibration.tail()
    expected = brute_force(ids, owners, vectors)
    assert tail.counts == PairCounts.of(expected)
    assert tail.identities == len(set(owners.tolist())) == 29  # 10 ORL people, Obama, 18 other faces
    assert tail.identity_pairs == 29 * 28 // 2 and tail.dropped_duplicates == 0 and tail.trimmed == 0


def test_an_update_is_capped_and_the_sample_stays_uniform(gallery: Gallery) -> None:
    ids, owners, vectors = gallery
    calibration = SelfCalibration(per_face=20, seed=1)
    calibration.add(ids[:60], owners[:60], vectors[:60])
    before = calibration.pairs_kept
    calibration.add(ids[60:61], owners[60:61], vectors[60:61])
    assert calibration.pairs_kept - before <= 20  # one new face: at most per_face comparisons
    capped = SelfCalibration(max_pairs=1000, seed=2)
    capped.add(ids, owners, vectors)
    assert 250 < capped.pairs_kept <= 1000  # thinned by halves
    full = brute_force(ids, owners, vectors)
    kept, *_ = capped.scores()
    assert abs(np.median(kept) - np.median(full)) < 0.03  # a uniform sample has the same body


def test_one_person_enrolled_twice_is_not_an_impostor_pair(gallery: Gallery, faces: dict[str, np.ndarray]) -> None:
    ids, owners, vectors = gallery
    twice = owners.copy()
    obama = np.nonzero(owners == 1000)[0]
    twice[obama[1]] = 2000  # obama2.jpg enrolled as someone else
    calibration = SelfCalibration()
    calibration.add(ids, twice, vectors)
    tail = calibration.tail()
    assert tail.dropped_duplicates == 1  # cosine 0.74, above the duplicate bound
    flagged = SelfCalibration(duplicate_bound=1.0)
    flagged.add(ids, twice, vectors)
    assert flagged.tail().dropped_duplicates == 0
    flagged.exclude(2000, 1000)  # the identity-conflict gate said so
    assert flagged.tail().dropped_duplicates == 1 and flagged.tail().counts == tail.counts


def test_the_top_outliers_are_trimmed_by_rule(gallery: Gallery) -> None:
    ids, owners, vectors = gallery
    calibration = SelfCalibration(trim_fraction=0.01)  # 406 pairs of people: the top 4 go
    calibration.add(ids, owners, vectors)
    scores, identity_pairs, _, trimmed = calibration.scores()
    assert trimmed == 4 and identity_pairs == 406 - 4
    assert scores.max() < brute_force(ids, owners, vectors).max()


def test_removed_faces_no_longer_count(gallery: Gallery) -> None:
    ids, owners, vectors = gallery
    calibration = SelfCalibration()
    calibration.add(ids, owners, vectors)
    gone = ids[owners == 3]
    calibration.remove_faces(gone)
    keep = owners != 3
    assert calibration.tail().counts == PairCounts.of(brute_force(ids[keep], owners[keep], vectors[keep]))


def test_self_calibrated_threshold_keeps_held_out_strangers_out(gallery: Gallery, faces: dict[str, np.ndarray]) -> None:
    ids, owners, vectors = gallery
    manifest, _ = load_embedder_model("builtin:sface")
    assert manifest.impostors is not None
    policy = GalleryAwareThreshold(manifest.impostors, 0.01, manifest.threshold.cosine)
    calibration = SelfCalibration()
    calibration.add(ids, owners, vectors)
    choice = policy.choose(len(ids), calibration.tail())
    assert choice.source == "gallery-self"  # 406 pairs of people >= 45
    assert choice.pairs["gallery"] == len(brute_force(ids, owners, vectors))
    assert choice.fpir_interval is not None and choice.fpir_interval[1] <= 0.01
    strangers = faces["vectors"][(faces["owners"] >= 11) & (faces["owners"] <= 20)]
    best = (strangers @ vectors.T).max(axis=1)
    assert len(best) == 100 and int((best >= choice.value).sum()) <= 2  # 1% of 100 expected
