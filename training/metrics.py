"""Face recognition metrics as pure numpy functions of similarity scores.

Verification (1:1): the LFW protocol's 10-fold accuracy (best threshold chosen on
nine folds, applied to the tenth), ROC AUC, and TAR at fixed FAR. Open-set
identification (1:N): rank-1, and FNIR at fixed FPIR, NIST FRVT's way (a mated
search fails unless the mate is the top candidate and scores at or above the
threshold; a non-mated search is a false positive when its top candidate does).

Convention everywhere: higher score = more alike; a pair is accepted when
`score > threshold`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

DEFAULT_FARS = (1e-2, 1e-3, 1e-4)
DEFAULT_FPIRS = (1e-1, 1e-2, 1e-3)


def rate_key(rate: float) -> str:
    """1e-3 -> "1e-03": a stable JSON key for a rate."""
    return f"{rate:.0e}"


def _check_pairs(scores: NDArray[Any], issame: NDArray[Any]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(issame).astype(bool).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores for {y.size} labels")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    return s, y


def best_threshold(scores: NDArray[Any], issame: NDArray[Any]) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy of `score > threshold`; the threshold lies midway between scores."""
    s, y = _check_pairs(scores, issame)
    if s.size == 0:
        raise ValueError("no pairs")
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # Cut after position k (accept the k+1 highest); cuts only between distinct scores.
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    n_neg = int((~y).sum())
    correct = np.concatenate([[n_neg], tp + (n_neg - fp)])  # index 0: accept nothing
    valid = np.concatenate([[True], np.append(s_sorted[1:] < s_sorted[:-1], True)])
    correct = np.where(valid, correct, -1)
    best = int(np.argmax(correct))
    if best == 0:
        threshold = float(s_sorted[0]) + 1e-6
    elif best == s.size:
        threshold = float(s_sorted[-1]) - 1e-6
    else:
        threshold = float(s_sorted[best - 1] + s_sorted[best]) / 2.0
    return threshold, float(correct[best]) / s.size


def kfold_accuracy(scores: NDArray[Any], issame: NDArray[Any], n_folds: int = 10) -> dict[str, Any]:
    """LFW protocol: contiguous folds (as InsightFace's KFold without shuffling), threshold from the other folds."""
    s, y = _check_pairs(scores, issame)
    if s.size < n_folds:
        raise ValueError(f"{s.size} pairs cannot be split into {n_folds} folds")
    folds = np.array_split(np.arange(s.size), n_folds)
    accuracies, thresholds = [], []
    for test in folds:
        train = np.setdiff1d(np.arange(s.size), test, assume_unique=True)
        threshold, _ = best_threshold(s[train], y[train])
        accuracies.append(float(np.mean((s[test] > threshold) == y[test])))
        thresholds.append(threshold)
    return {
        "accuracy": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies)),
        "threshold": float(np.mean(thresholds)),
        "fold_accuracies": accuracies,
    }


def roc_auc(scores: NDArray[Any], issame: NDArray[Any]) -> float:
    """Area under the ROC: P(genuine score > impostor score), ties counting one half."""
    s, y = _check_pairs(scores, issame)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs both genuine and impostor pairs")
    order = np.argsort(s, kind="stable")
    ranks = np.empty(s.size, dtype=np.float64)
    sorted_s = s[order]
    # Average ranks over ties (Mann-Whitney U).
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def threshold_at_rate(negatives: NDArray[Any], rate: float) -> tuple[float, float] | None:
    """The lowest threshold t with P(negative > t) <= rate, and the rate actually reached.

    None when `rate` is below 1 / len(negatives): such a rate cannot be measured here.
    """
    neg = np.sort(np.asarray(negatives, dtype=np.float64).reshape(-1))[::-1]
    if neg.size == 0:
        raise ValueError("no negative scores")
    allowed = int(np.floor(rate * neg.size + 1e-9))
    if allowed < 1:
        return None
    threshold = float(neg[allowed]) if allowed < neg.size else float(neg[-1]) - 1e-6
    return threshold, float(np.mean(neg > threshold))


def roc_curve(scores: NDArray[Any], issame: NDArray[Any]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(FAR, TAR) at every distinct threshold, FAR increasing."""
    s, y = _check_pairs(scores, issame)
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    last = np.append(s_sorted[1:] < s_sorted[:-1], True)
    tp = np.cumsum(y_sorted)[last]
    fp = np.cumsum(~y_sorted)[last]
    far = np.concatenate([[0.0], fp / max(1, int((~y).sum()))])
    tar = np.concatenate([[0.0], tp / max(1, int(y.sum()))])
    return far, tar


def verification_metrics(
    scores: NDArray[Any],
    issame: NDArray[Any],
    *,
    fars: Sequence[float] = DEFAULT_FARS,
    n_folds: int = 10,
) -> dict[str, Any]:
    """Accuracy (10-fold), ROC AUC, EER, and TAR with its threshold at each FAR.

    A FAR below 1 / (impostor pairs) cannot be measured and is reported as None.
    """
    s, y = _check_pairs(scores, issame)
    genuine, impostor = s[y], s[~y]
    result: dict[str, Any] = {
        "pairs": int(s.size),
        "genuine_pairs": int(genuine.size),
        "impostor_pairs": int(impostor.size),
        **kfold_accuracy(s, y, n_folds),
        "auc": roc_auc(s, y),
        "eer": equal_error_rate(s, y),
        "genuine_mean": float(genuine.mean()),
        "impostor_mean": float(impostor.mean()),
        "tar_at_far": {},
        "threshold_at_far": {},
    }
    for far in fars:
        found = threshold_at_rate(impostor, far)
        key = rate_key(far)
        result["tar_at_far"][key] = None if found is None else float(np.mean(genuine > found[0]))
        result["threshold_at_far"][key] = None if found is None else found[0]
    return result


def equal_error_rate(scores: NDArray[Any], issame: NDArray[Any]) -> float:
    far, tar = roc_curve(scores, issame)
    frr = 1.0 - tar
    i = int(np.argmin(np.abs(far - frr)))
    return float((far[i] + frr[i]) / 2.0)


@dataclass(frozen=True)
class SearchResults:
    """One 1:N search per probe against a gallery of identities."""

    top1_score: NDArray[np.float64]  # (P,) best score over all gallery identities
    top1_correct: NDArray[np.bool_]  # (P,) the best identity is the probe's own
    mated: NDArray[np.bool_]  # (P,) the probe's identity is enrolled
    gallery_identities: int


def search(
    gallery: NDArray[np.floating],
    gallery_labels: NDArray[Any],
    probes: NDArray[np.floating],
    probe_labels: NDArray[Any],
    *,
    distractors: NDArray[np.floating] | None = None,
) -> SearchResults:
    """Score every probe against every gallery identity (max over its templates).

    Embeddings are unit vectors (cosine = dot). Distractors are extra gallery
    entries, each its own identity, that no probe belongs to.
    """
    g = np.asarray(gallery, dtype=np.float32)
    p = np.asarray(probes, dtype=np.float32)
    g_labels = np.asarray(gallery_labels)
    p_labels = np.asarray(probe_labels)
    identities, inverse = np.unique(g_labels, return_inverse=True)
    sims = p @ g.T  # (P, G)
    per_identity = np.full((len(p), len(identities)), -np.inf, dtype=np.float32)
    np.maximum.at(per_identity.T, inverse, sims.T)
    best_idx = np.argmax(per_identity, axis=1)
    best = per_identity[np.arange(len(p)), best_idx]
    correct = identities[best_idx] == p_labels
    n_identities = len(identities)
    if distractors is not None and len(distractors):
        d_best = (p @ np.asarray(distractors, dtype=np.float32).T).max(axis=1)
        correct &= best >= d_best
        best = np.maximum(best, d_best)
        n_identities += len(distractors)
    mated = np.isin(p_labels, identities)
    return SearchResults(best.astype(np.float64), correct & mated, mated, n_identities)


def open_set_metrics(
    gallery: NDArray[np.floating],
    gallery_labels: NDArray[Any],
    probes: NDArray[np.floating],
    probe_labels: NDArray[Any],
    *,
    distractors: NDArray[np.floating] | None = None,
    fpirs: Sequence[float] = DEFAULT_FPIRS,
) -> dict[str, Any]:
    """Rank-1 over mated probes, and FNIR / DIR with the threshold at each FPIR over non-mated probes."""
    results = search(gallery, gallery_labels, probes, probe_labels, distractors=distractors)
    return search_metrics(results, fpirs=fpirs)


def search_metrics(results: SearchResults, *, fpirs: Sequence[float] = DEFAULT_FPIRS) -> dict[str, Any]:
    mated_scores = results.top1_score[results.mated]
    mated_correct = results.top1_correct[results.mated]
    non_mated = results.top1_score[~results.mated]
    if mated_scores.size == 0:
        raise ValueError("open-set metrics need at least one mated probe")
    out: dict[str, Any] = {
        "gallery_identities": results.gallery_identities,
        "mated_searches": int(mated_scores.size),
        "non_mated_searches": int(non_mated.size),
        "rank1": float(mated_correct.mean()),
        "fnir_at_fpir": {},
        "dir_at_fpir": {},
        "threshold_at_fpir": {},
    }
    for fpir in fpirs:
        key = rate_key(fpir)
        found = threshold_at_rate(non_mated, fpir) if non_mated.size else None
        if found is None:
            out["fnir_at_fpir"][key] = out["dir_at_fpir"][key] = out["threshold_at_fpir"][key] = None
            continue
        hit = float(np.mean(mated_correct & (mated_scores > found[0])))
        out["dir_at_fpir"][key] = hit
        out["fnir_at_fpir"][key] = 1.0 - hit
        out["threshold_at_fpir"][key] = found[0]
    return out


def det_curve(results: SearchResults) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(FPIR, FNIR) as the threshold sweeps the non-mated top-1 scores, FPIR increasing."""
    non_mated = np.sort(results.top1_score[~results.mated])[::-1]
    mated_scores = results.top1_score[results.mated]
    mated_correct = results.top1_correct[results.mated]
    if non_mated.size == 0:
        return np.zeros(0), np.zeros(0)
    fpir = np.arange(1, non_mated.size + 1) / non_mated.size
    hits = np.sort(mated_scores[mated_correct])
    found = hits.size - np.searchsorted(hits, non_mated, side="left")  # correct mates scoring >= t
    return fpir, 1.0 - found / mated_scores.size


def split_gallery_probe(
    labels: NDArray[Any],
    *,
    enrolled_fraction: float = 0.5,
    templates_per_identity: int = 1,
    seed: int = 0,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(gallery indices, probe indices), deterministic in `seed`.

    A fraction of identities is enrolled with `templates_per_identity` images; their
    other images are mated probes. Every image of a non-enrolled identity is a
    non-mated probe. Identities with too few images to leave a probe stay unenrolled.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    identities = np.unique(labels)
    shuffled = rng.permutation(identities)
    eligible = [c for c in shuffled if int((labels == c).sum()) > templates_per_identity]
    n_enrolled = round(enrolled_fraction * len(identities))
    enrolled = set(eligible[:n_enrolled])
    gallery: list[int] = []
    probes: list[int] = []
    for c in identities:
        idx = np.flatnonzero(labels == c)
        if c in enrolled:
            idx = rng.permutation(idx)
            gallery.extend(idx[:templates_per_identity])
            probes.extend(idx[templates_per_identity:])
        else:
            probes.extend(idx)
    return np.array(sorted(gallery), dtype=np.int64), np.array(sorted(probes), dtype=np.int64)
