from __future__ import annotations

import numpy as np
import pytest

from training.metrics import (
    best_threshold,
    det_curve,
    kfold_accuracy,
    open_set_metrics,
    roc_auc,
    search,
    split_gallery_probe,
    threshold_at_rate,
    verification_metrics,
)


def test_separable_scores_are_perfect() -> None:
    scores = np.concatenate([np.linspace(0.8, 0.9, 50), np.linspace(0.0, 0.3, 50)])
    issame = np.array([True] * 50 + [False] * 50)
    m = verification_metrics(scores, issame, fars=(1e-1, 1e-2))
    assert m["accuracy"] == 1.0
    assert m["auc"] == 1.0
    assert m["eer"] == 0.0
    assert m["tar_at_far"] == {"1e-01": 1.0, "1e-02": None}  # 1e-2 < 1/50 impostors: not measurable


def test_best_threshold_and_auc_by_hand() -> None:
    scores = np.array([0.9, 0.6, 0.4, 0.5, 0.3, 0.1])
    issame = np.array([1, 1, 1, 0, 0, 0], dtype=bool)
    threshold, accuracy = best_threshold(scores, issame)
    assert accuracy == pytest.approx(5 / 6)
    assert threshold == pytest.approx(0.55)
    # 8 of the 9 genuine/impostor orderings are right.
    assert roc_auc(scores, issame) == pytest.approx(8 / 9)
    # A tie counts one half.
    assert roc_auc(np.array([0.5, 0.5]), np.array([True, False])) == pytest.approx(0.5)


def test_ten_fold_accuracy_isolates_one_bad_pair() -> None:
    issame = np.tile([True, False], 50)
    scores = np.where(issame, 1.0, 0.0)
    scores[24] = -1.0  # a genuine pair that looks like nobody: in fold 3 (pairs 20..29)
    result = kfold_accuracy(scores, issame, n_folds=10)
    assert result["fold_accuracies"][2] == pytest.approx(0.9)
    assert result["accuracy"] == pytest.approx(0.99)
    assert 0.0 < result["threshold"] < 1.0


def test_tar_at_far_uses_the_impostor_quantile() -> None:
    impostors = np.arange(1000) / 1000.0  # 0.000 .. 0.999
    genuine = np.array([0.9985, 0.995, 0.5, 1.0])
    scores = np.concatenate([genuine, impostors])
    issame = np.array([True] * 4 + [False] * 1000)
    assert threshold_at_rate(impostors, 1e-3) == (pytest.approx(0.998), pytest.approx(1e-3))
    m = verification_metrics(scores, issame, fars=(1e-2, 1e-3, 1e-4))
    assert m["threshold_at_far"]["1e-02"] == pytest.approx(0.989)
    assert m["tar_at_far"]["1e-02"] == pytest.approx(0.75)  # all but 0.5
    assert m["tar_at_far"]["1e-03"] == pytest.approx(0.5)  # 0.9985 and 1.0 beat 0.998
    assert m["tar_at_far"]["1e-04"] is None


def _unit(*values: float) -> np.ndarray:
    v = np.array(values + (0.0,) * (4 - len(values)))
    v[3] = np.sqrt(max(0.0, 1.0 - float(np.sum(v[:3] ** 2))))
    return v


def test_open_set_on_a_tiny_gallery() -> None:
    gallery = np.eye(4)[:3]
    labels = np.array([0, 1, 2])
    probes = np.stack([_unit(0.9, np.sqrt(0.19)), _unit(0, 0.3, 0.6), _unit(0.5), _unit(0.2)])
    probe_labels = np.array([0, 1, 7, 8])  # two mated (one found, one confused with 2), two non-mated
    m = open_set_metrics(gallery, labels, probes, probe_labels, fpirs=(0.5, 0.1))
    assert (m["mated_searches"], m["non_mated_searches"], m["gallery_identities"]) == (2, 2, 3)
    assert m["rank1"] == 0.5
    assert m["threshold_at_fpir"]["5e-01"] == pytest.approx(0.2)
    assert m["dir_at_fpir"]["5e-01"] == 0.5
    assert m["fnir_at_fpir"]["5e-01"] == 0.5
    assert m["fnir_at_fpir"]["1e-01"] is None

    distractor = _unit(0.95, np.sqrt(1 - 0.95**2))[None]  # closer to probe 0 than its mate is
    with_distractor = open_set_metrics(gallery, labels, probes, probe_labels, distractors=distractor, fpirs=(0.5,))
    assert with_distractor["rank1"] == 0.0
    assert with_distractor["gallery_identities"] == 4

    fpir, fnir = det_curve(search(gallery, labels, probes, probe_labels))
    np.testing.assert_allclose(fpir, [0.5, 1.0])
    np.testing.assert_allclose(fnir, [0.5, 0.5])


def test_gallery_probe_split_is_deterministic_and_disjoint() -> None:
    labels = np.repeat(np.arange(10), 4)
    gallery, probes = split_gallery_probe(labels, enrolled_fraction=0.5, templates_per_identity=1, seed=1)
    again = split_gallery_probe(labels, enrolled_fraction=0.5, templates_per_identity=1, seed=1)
    np.testing.assert_array_equal(gallery, again[0])
    assert len(gallery) == 5
    assert len(set(labels[gallery])) == 5
    assert set(gallery).isdisjoint(probes)
    assert len(gallery) + len(probes) == len(labels)
    mated = np.isin(labels[probes], labels[gallery])
    assert (mated.sum(), (~mated).sum()) == (15, 20)
