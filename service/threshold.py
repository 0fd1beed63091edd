"""How the open-set decision threshold is chosen.

A fixed cosine threshold lets more strangers through as the gallery grows: a
stranger is falsely matched when their best score against *any* of N enrolled
faces passes it, so the false-positive identification rate (FPIR) is
1 - (1 - p(t))^N, where p(t) is the chance that one impostor comparison scores
above t. `GalleryAwareThreshold` inverts that: for a target FPIR and the current
gallery size it finds t with p(t) = 1 - (1 - FPIR)^(1/N), using the model's
impostor distribution recorded in its manifest (empirical quantiles for the body,
a generalised Pareto tail, fitted over a high start, for the rare end that no
finite sample reaches: the peaks-over-threshold method of extreme value theory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from service.vision.manifest import ImpostorTail


class ThresholdPolicy(Protocol):
    def threshold(self, gallery_size: int) -> tuple[float, float | None, str]:
        """(cosine threshold, expected false-positive identification rate or None, source)."""
        ...

    def pair_threshold(self) -> float:
        """The 1:1 verification threshold."""
        ...


class FixedThreshold:
    def __init__(self, value: float, source: str) -> None:
        self.value = value
        self.source = source

    def threshold(self, gallery_size: int) -> tuple[float, float | None, str]:
        return self.value, None, self.source

    def pair_threshold(self) -> float:
        return self.value


@dataclass(frozen=True)
class PairTail:
    """Exceedance of one impostor comparison: P(cos > s)."""

    probs: NDArray[np.float64]  # decreasing exceedance probabilities of the empirical body
    scores: NDArray[np.float64]  # the matching quantiles, increasing
    start: float  # where the fitted tail takes over
    p0: float  # P(cos > start)
    sigma: float  # generalised Pareto scale of the excess over `start`
    xi: float  # generalised Pareto shape (< 0: a bounded, lighter-than-exponential tail)

    @classmethod
    def of(cls, tail: ImpostorTail) -> PairTail:
        items = sorted(((float(p), float(s)) for p, s in tail.quantiles.items()), key=lambda x: -x[0])
        if not items or not tail.pair_tail:
            raise ValueError("the manifest's impostor record needs quantiles and a pair_tail")
        return cls(
            probs=np.array([p for p, _ in items]),
            scores=np.array([s for _, s in items]),
            start=float(tail.pair_tail["start"]),
            p0=float(tail.pair_tail["p0"]),
            sigma=float(tail.pair_tail["sigma"]),
            xi=float(tail.pair_tail["xi"]),
        )

    def exceedance(self, score: float) -> float:
        if score <= self.start:  # interpolate log(p) between the empirical quantiles
            return float(np.exp(np.interp(score, self.scores, np.log(self.probs))))
        y = score - self.start
        if abs(self.xi) < 1e-9:
            return self.p0 * math.exp(-y / self.sigma)
        base = 1.0 + self.xi * y / self.sigma
        return 0.0 if base <= 0 else self.p0 * base ** (-1.0 / self.xi)

    def score_at(self, prob: float) -> float:
        """The cosine s with P(cos > s) = prob."""
        if prob >= self.p0:
            return float(np.interp(-math.log(prob), -np.log(self.probs), self.scores))
        if abs(self.xi) < 1e-9:
            return self.start + self.sigma * math.log(self.p0 / prob)
        return self.start + self.sigma / self.xi * ((prob / self.p0) ** -self.xi - 1.0)


class GalleryAwareThreshold:
    """A threshold that keeps the expected FPIR at or below `target` whatever the gallery size.

    It never goes below the model's calibrated 1:1 threshold: a small gallery is held
    to the verification operating point, and the bar rises as the gallery grows.
    """

    def __init__(self, tail: ImpostorTail, target_fpir: float, pair_threshold: float) -> None:
        if not 0 < target_fpir < 1:
            raise ValueError("target FPIR must be in (0, 1)")
        self.tail = PairTail.of(tail)
        self.target = target_fpir
        self._pair = pair_threshold

    def threshold(self, gallery_size: int) -> tuple[float, float | None, str]:
        n = max(1, gallery_size)
        per_comparison = -math.expm1(math.log1p(-self.target) / n)  # 1 - (1 - target)^(1/n), stably
        value = min(1.0, max(self._pair, self.tail.score_at(per_comparison)))
        return value, self.expected_fpir(value, n), "gallery"

    def expected_fpir(self, threshold: float, gallery_size: int) -> float:
        p = self.tail.exceedance(threshold)
        return float(-math.expm1(gallery_size * math.log1p(-min(p, 1 - 1e-15))))

    def pair_threshold(self) -> float:
        return self._pair


def fit_impostor_tail(
    pair_scores: NDArray[np.floating],
    *,
    min_excesses: int = 2000,
    top1: NDArray[np.floating] | None = None,
    gallery_size: int = 0,
    measured_on: str = "",
) -> ImpostorTail:
    """Summarise impostor cosines for a manifest.

    `pair_scores` are 1:1 impostor comparisons (different people). The body is kept as
    quantiles at exceedance 0.5 .. 1e-k, as far as the sample supports (at least 20
    scores beyond each). Above a start that leaves `min_excesses` scores (and at most
    the top 5%), the excesses get a generalised Pareto fit by probability-weighted
    moments (Hosking & Wallis 1987). `top1`, when given, are the best scores of non-mated
    searches against `gallery_size` identities, kept for reports.
    """
    scores = np.sort(np.asarray(pair_scores, dtype=np.float64))
    n = len(scores)
    if n < 1000:
        raise ValueError(f"need at least 1000 impostor scores to fit a tail, got {n}")
    quantiles: dict[str, float] = {}
    for k in range(1, 12):
        for mantissa in (5.0, 2.0, 1.0):
            p = mantissa * 10.0**-k
            if p * n < 20:
                break
            quantiles[f"{p:.0e}"] = round(float(np.quantile(scores, 1 - p)), 5)
    p0 = min(0.05, max(min_excesses / n, 1e-4))
    start = float(np.quantile(scores, 1 - p0))
    excess = np.sort(scores[scores > start] - start)
    sigma, xi = _gpd_pwm(excess)
    top1_q: dict[str, float] = {}
    if top1 is not None and len(top1):
        for p in (0.5, 0.1, 0.05, 0.01):
            top1_q[f"{p:.0e}"] = round(float(np.quantile(top1, 1 - p)), 5)
    return ImpostorTail(
        gallery_size=gallery_size,
        quantiles=quantiles,
        pair_tail={"start": round(start, 6), "p0": p0, "sigma": round(sigma, 7), "xi": round(xi, 5), "n": float(n)},
        top1=top1_q,
        measured_on=measured_on,
    )


def _gpd_pwm(excess: NDArray[np.float64]) -> tuple[float, float]:
    """Generalised Pareto (sigma, xi) of sorted excesses by probability-weighted moments."""
    m = len(excess)
    if m < 10:
        return max(float(excess.mean()) if m else 1e-3, 1e-6), 0.0
    a0 = float(excess.mean())
    a1 = float(np.mean(excess * (np.arange(m - 1, -1, -1) / (m - 1))))  # E[X (1 - F(X))]
    k = a0 / (a0 - 2.0 * a1) - 2.0  # Hosking & Wallis' shape; xi = -k
    sigma = 2.0 * a0 * a1 / (a0 - 2.0 * a1)
    return max(sigma, 1e-6), -k
