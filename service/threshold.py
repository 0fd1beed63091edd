"""How the open-set decision threshold is chosen.

A fixed cosine threshold lets more strangers through as the gallery grows: a
stranger is falsely matched when their best score against *any* of N enrolled
faces passes it, so the false-positive identification rate (FPIR) is
1 - (1 - p(t))^N, where p(t) is the chance that one impostor comparison scores
at or above t. `GalleryAwareThreshold` inverts that: for a target FPIR and the
current gallery size it finds the lowest t whose *upper confidence bound* on p(t)
is at most 1 - (1 - FPIR)^(1/N).

Where p(t) comes from (`ImpostorModel`):

- real-against-real impostor pairs: the manifest's record of real calibration people,
  pooled with the gallery's own between-identity pairs when self-calibration is on
  (`service.calibration`): each source weighs as many pairs as it has;
- the shape of the rare end from the record's many synthetic-against-real pairs
  (quantiles and a generalised Pareto tail), multiplied by the synthetic-to-real gap
  that the real pairs measure: real impostors of SFace pass a bar 2-3x more often than
  DCGAN faces do.

The bound is a one-sided Clopper-Pearson bound on exceedance counts (95% by default),
the larger of the real pairs' own and the gap-corrected synthetic one. Pairs are
treated as independent, which they are not quite (every photo of a person takes part
in many pairs), so the bound is optimistic where a few look-alike people dominate the
count. Below what any measured pair supports, the fitted tail takes over and the
choice says so (`extrapolated`, and a log line when that starts or stops).

Wiring (for service/recognizer.py and the API; the compatibility path keeps today's
recognizer running unchanged):

- today: `policy.threshold(gallery_size) -> (value, expected_fpir, source)`;
- new: `policy.choose(gallery_size, self_tail) -> ThresholdChoice`, where `self_tail`
  is `SelfCalibration.tail()` of the collection's gallery (`service.calibration`), or
  None when self-calibration is off (setting) or not kept. Call `policy.prepare(tail)`
  where the tail is made (off the request path): a new tail costs a pooled model (~0.1-1 s)
  and `choose` then only looks it up. `ThresholdChoice.public()`
  is the JSON for `/identify` and `GET /collections/{name}`: threshold, expected_fpir,
  fpir_interval, threshold_source ("gallery" or "gallery-self"), pairs, extrapolated.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from service.vision.manifest import ImpostorTail

log = logging.getLogger(__name__)

CONFIDENCE = 0.95
GRID_STEP = 0.005
GRID: tuple[float, ...] = tuple(round(i * GRID_STEP, 3) for i in range(0, 161))  # cosines 0.0 .. 0.8
SEARCH_STEP = 0.0005
SELF_MIN_IDENTITY_PAIRS = 45  # as many pairs of people as the record's 10 real people give


@dataclass(frozen=True)
class ThresholdChoice:
    """One open-set decision threshold, with what it promises and what that rests on."""

    value: float
    expected_fpir: float | None = None  # point estimate at this gallery size
    fpir_interval: tuple[float, float] | None = None  # one-sided bounds, each at CONFIDENCE
    source: str = "gallery"  # request | fixed | manifest | gallery | gallery-self
    pairs: dict[str, int] = field(default_factory=dict)  # impostor pairs it rests on, by origin
    extrapolated: bool = False  # beyond every measured pair: the fitted tail alone decided
    basis: str = ""  # which data bound the choice
    gap: float | None = None  # synthetic-to-real gap (upper bound) used

    def as_tuple(self) -> tuple[float, float | None, str]:
        return self.value, self.expected_fpir, self.source

    def public(self) -> dict[str, Any]:
        """What `/identify` and `GET /collections/{name}` report."""
        return {
            "threshold": round(self.value, 5),
            "threshold_source": self.source,
            "expected_fpir": None if self.expected_fpir is None else float(f"{self.expected_fpir:.3g}"),
            "fpir_interval": None if self.fpir_interval is None else [float(f"{v:.3g}") for v in self.fpir_interval],
            "pairs": dict(self.pairs),
            "extrapolated": self.extrapolated,
        }


class ThresholdPolicy(Protocol):
    def threshold(self, gallery_size: int) -> tuple[float, float | None, str]:
        """(cosine threshold, expected false-positive identification rate or None, source)."""
        ...

    def choose(self, gallery_size: int, self_tail: SelfTail | None = None) -> ThresholdChoice:
        """The threshold for this gallery size, with its promise and evidence."""
        ...

    def pair_threshold(self) -> float:
        """The 1:1 verification threshold."""
        ...

    def best_of_threshold(self, comparisons: int) -> float:
        """The threshold for the best of `comparisons` impostor comparisons (verify against an
        identity with that many faces) with the false-accept rate of one pair at `pair_threshold`."""
        ...


class FixedThreshold:
    def __init__(self, value: float, source: str) -> None:
        self.value = value
        self.source = source

    def threshold(self, gallery_size: int) -> tuple[float, float | None, str]:
        return self.value, None, self.source

    def choose(self, gallery_size: int, self_tail: SelfTail | None = None) -> ThresholdChoice:
        return ThresholdChoice(self.value, None, None, self.source)

    def pair_threshold(self) -> float:
        return self.value

    def best_of_threshold(self, comparisons: int) -> float:
        return self.value  # fixed means fixed: there is no impostor record to correct with


# --- counts and their confidence bounds --------------------------------------------------


@dataclass(frozen=True)
class PairCounts:
    """How many of `pairs` impostor scores are at or above each cosine of `grid`."""

    grid: tuple[float, ...]
    counts: tuple[int, ...]
    pairs: int

    @classmethod
    def of(cls, scores: NDArray[np.floating], grid: tuple[float, ...] = GRID) -> PairCounts:
        ordered = np.sort(np.asarray(scores, dtype=np.float64))
        above = len(ordered) - np.searchsorted(ordered, np.asarray(grid), side="left")
        return cls(tuple(grid), tuple(int(c) for c in above), len(ordered))

    @classmethod
    def empty(cls, grid: tuple[float, ...] = GRID) -> PairCounts:
        return cls(tuple(grid), (0,) * len(grid), 0)

    def __add__(self, other: PairCounts) -> PairCounts:
        if self.grid != other.grid:
            raise ValueError("pair counts on different grids cannot be pooled")
        return PairCounts(
            self.grid, tuple(a + b for a, b in zip(self.counts, other.counts, strict=True)), self.pairs + other.pairs
        )

    def at(self, scores: NDArray[np.float64]) -> NDArray[np.int64]:
        """Count at the grid cosine at or below each score: never fewer than at the score itself."""
        index = np.searchsorted(np.asarray(self.grid), scores, side="right") - 1
        counts = np.asarray((self.pairs, *self.counts), dtype=np.int64)
        return counts[np.clip(index, -1, len(self.grid) - 1) + 1]


@functools.lru_cache(maxsize=1 << 16)
def binomial_bounds(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """One-sided Clopper-Pearson bounds (each at `confidence`) on p from k successes in n trials."""
    if n <= 0:
        return 0.0, 1.0
    if min(k, n - k) > 1000:  # Wilson's score interval is as good there, and cheap
        z = _normal_quantile(confidence)
        phat = k / n
        centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)
    lower = 0.0 if k == 0 else _beta_quantile(1 - confidence, k, n - k + 1)
    upper = 1.0 if k >= n else _beta_quantile(confidence, k + 1, n - k)
    return lower, upper


def _normal_quantile(q: float) -> float:
    lo, hi = -10.0, 10.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if 0.5 * math.erfc(-mid / math.sqrt(2)) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _beta_quantile(q: float, a: float, b: float) -> float:
    lo, hi = 0.0, 1.0
    for _ in range(56):  # to 1e-17: far below any rate a bound is asked for
        mid = (lo + hi) / 2
        if _betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) (continued fraction, Numerical Recipes 6.4)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1 - x) / b


def _betacf(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 20000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-12:
            break
    return h


# --- the record's shape ------------------------------------------------------------------


@dataclass(frozen=True)
class PairTail:
    """Exceedance of one impostor comparison: P(cos > s), as the record's fit gives it."""

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


@dataclass(frozen=True)
class SelfTail:
    """A gallery's own between-identity impostor pairs, as `service.calibration` keeps them."""

    counts: PairCounts
    identities: int
    identity_pairs: int  # pairs of people behind `counts.pairs` pairs of faces
    dropped_duplicates: int = 0  # identity pairs left out as one person enrolled twice
    trimmed: int = 0  # identity pairs trimmed as the top outliers


# --- the exceedance curve and its bounds -------------------------------------------------


class ImpostorModel:
    """p(t) for one impostor comparison, with one-sided bounds, on a fine grid of cosines.

    `synthetic` are the counts the record's fitted `shape` rests on; `real` are real
    impostor pairs (the record's, plus the gallery's own). The gap g = p_real / p_shape is
    measured where both are informative: where the shape's exceedance is at most 5% and at
    least `min_count` real pairs exceed. Its upper bound is never taken below 1: where the
    real pairs run lighter than the synthetic ones, the synthetic bound still holds.
    """

    def __init__(
        self,
        shape: PairTail,
        synthetic: PairCounts,
        real: PairCounts,
        *,
        confidence: float = CONFIDENCE,
        min_count: int = 5,
    ) -> None:
        self.shape = shape
        self.synthetic = synthetic
        self.real = real
        self.confidence = confidence
        self.search = np.round(np.arange(-0.2, 1.0 + SEARCH_STEP / 2, SEARCH_STEP), 4)
        shape_p = np.array([shape.exceedance(float(t)) for t in self.search])
        grid_shape = np.array([shape.exceedance(t) for t in real.grid])
        self.gap_low, self.gap, self.gap_high = self._gap(real, grid_shape, min_count)
        syn_k = synthetic.at(self.search)
        syn_bounds = _bounds_of(syn_k, synthetic.pairs, confidence)
        real_k = real.at(self.search)
        real_bounds = _bounds_of(real_k, real.pairs, confidence)
        # Beyond the last measured pair the fitted tail goes on, scaled to meet the last bound.
        measured = np.nonzero(syn_k > 0)[0]
        last = measured[-1] if len(measured) else 0
        beyond = max(1.0, syn_bounds[last, 1] / shape_p[last]) if len(measured) and shape_p[last] > 0 else 1.0
        syn_high = np.where(syn_k > 0, np.maximum(syn_bounds[:, 1], shape_p), beyond * shape_p)
        gap_syn = self.gap_high * syn_high
        real_high = np.where(real_k > 0, real_bounds[:, 1], 0.0)
        self.high = np.minimum.accumulate(np.maximum(real_high, gap_syn))  # monotone, non-increasing
        self.point = np.minimum(1.0, self.gap * shape_p)
        self.low = np.where(syn_k > 0, self.gap_low * syn_bounds[:, 0], 0.0)
        self.basis = np.where(
            (real_k > 0) & (real_high >= gap_syn), "real pairs", np.where(syn_k > 0, "synthetic pairs x gap", "fit")
        )
        # The rule of three: the smallest exceedance the measured pairs support, real ones
        # directly, synthetic ones through the gap.
        self.floor_supported = float(
            min(
                3.0 / real.pairs if real.pairs else 1.0,
                self.gap_high * 3.0 / synthetic.pairs if synthetic.pairs else 1.0,
            )
        )

    @staticmethod
    def _gap(real: PairCounts, grid_shape: NDArray[np.float64], min_count: int) -> tuple[float, float, float]:
        if real.pairs == 0:
            return 1.0, 1.0, 1.0
        ratios_low, ratios, ratios_high = [], [], []
        for k, p in zip(real.counts, grid_shape, strict=True):
            if k >= min_count and 0 < p <= 0.05:
                low, high = binomial_bounds(k, real.pairs)
                ratios_low.append(low / p)
                ratios.append(k / real.pairs / p)
                ratios_high.append(high / p)
        if not ratios:
            return 1.0, 1.0, 1.0
        return float(min(ratios_low)), float(np.median(ratios)), float(max(1.0, max(ratios_high)))

    def index(self, score: float) -> int:
        return int(np.clip(np.searchsorted(self.search, score - 1e-9), 0, len(self.search) - 1))

    def exceedance_bounds(self, score: float) -> tuple[float, float, float]:
        i = self.index(score)
        return float(self.low[i]), float(self.point[i]), float(self.high[i])

    def lowest_with_high_at_most(self, prob: float) -> float:
        """The lowest cosine whose upper bound on p is at most `prob` (1.0 where none is)."""
        ok = np.nonzero(self.high <= prob)[0]
        return float(self.search[ok[0]]) if len(ok) else 1.0


def _bounds_of(counts: NDArray[np.int64], n: int, confidence: float) -> NDArray[np.float64]:
    cache: dict[int, tuple[float, float]] = {}
    out = np.empty((len(counts), 2))
    for i, k in enumerate(counts.tolist()):
        if k not in cache:
            cache[k] = binomial_bounds(k, n, confidence)
        out[i] = cache[k]
    return out


def record_counts(tail: ImpostorTail) -> tuple[PairCounts, PairCounts]:
    """(the fitted pairs' counts, the real pairs' counts) of a record; empty where it has none."""
    grid = tuple(float(g) for g in tail.grid) or GRID
    synthetic = (
        PairCounts(grid, tuple(int(c) for c in tail.counts), int(tail.pair_tail.get("n", 0)))
        if tail.counts
        else PairCounts.empty(grid)
    )
    real = (
        PairCounts(grid, tuple(int(c) for c in tail.real_counts), int(tail.real_pairs))
        if tail.real_counts
        else PairCounts.empty(grid)
    )
    return synthetic, real


class GalleryAwareThreshold:
    """A threshold whose upper-bound FPIR stays at or below `target` whatever the gallery size.

    It never goes below the model's 1:1 threshold (`floor`): a small gallery is held to the
    verification operating point, so that `/identify` never accepts a pair that `/verify`
    rejects, and the bar rises as the gallery grows. `self_calibration` False ignores any
    self tail.
    """

    def __init__(
        self,
        tail: ImpostorTail,
        target_fpir: float,
        pair_threshold: float,
        *,
        floor: bool = True,
        self_calibration: bool = True,
        self_min_identity_pairs: int = SELF_MIN_IDENTITY_PAIRS,
        confidence: float = CONFIDENCE,
    ) -> None:
        if not 0 < target_fpir < 1:
            raise ValueError("target FPIR must be in (0, 1)")
        self.tail = PairTail.of(tail)
        self.target = target_fpir
        self._pair = pair_threshold
        self.synthetic, self.real = record_counts(tail)
        self.floor = floor
        self.self_calibration = self_calibration
        self.self_min_identity_pairs = self_min_identity_pairs
        self.confidence = confidence
        self.record = ImpostorModel(self.tail, self.synthetic, self.real, confidence=confidence)
        self._pooled: tuple[SelfTail, ImpostorModel] | None = None
        self._was_extrapolated: bool | None = None

    # --- compatibility: today's recognizer -------------------------------------------

    def threshold(self, gallery_size: int) -> tuple[float, float | None, str]:
        return self.choose(gallery_size).as_tuple()

    # --- the choice ------------------------------------------------------------------

    def model_for(self, self_tail: SelfTail | None) -> tuple[ImpostorModel, str, dict[str, int]]:
        pairs = {"record_real": self.real.pairs, "record_synthetic": self.synthetic.pairs}
        if self_tail is None or not self.self_calibration:
            return self.record, "gallery", pairs
        pairs |= {"gallery": self_tail.counts.pairs, "gallery_identity_pairs": self_tail.identity_pairs}
        if self_tail.identity_pairs < self.self_min_identity_pairs or self_tail.counts.pairs == 0:
            return self.record, "gallery", pairs
        if self._pooled is None or self._pooled[0] is not self_tail:
            pooled = ImpostorModel(self.tail, self.synthetic, self.real + self_tail.counts, confidence=self.confidence)
            self._pooled = (self_tail, pooled)
        return self._pooled[1], "gallery-self", pairs

    def prepare(self, self_tail: SelfTail | None) -> None:
        """Build the pooled model for a new self tail now (off the request path: it takes ~0.1-1 s),
        so that `choose` with the same tail only looks it up."""
        self.model_for(self_tail)

    def choose(self, gallery_size: int, self_tail: SelfTail | None = None) -> ThresholdChoice:
        n = max(1, gallery_size)
        model, source, pairs = self.model_for(self_tail)
        per_comparison = _per_comparison(self.target, n)
        value = model.lowest_with_high_at_most(per_comparison)
        if self.floor:
            value = max(value, self._pair)
        i = model.index(value)
        low, point, high = model.exceedance_bounds(value)
        extrapolated = bool(model.basis[i] == "fit" or per_comparison < model.floor_supported)
        choice = ThresholdChoice(
            value=min(1.0, value),
            expected_fpir=_fpir(point, n),
            fpir_interval=(_fpir(low, n), _fpir(high, n)),
            source=source,
            pairs=pairs,
            extrapolated=extrapolated,
            basis=str(model.basis[i]),
            gap=round(model.gap_high, 3),
        )
        self._say_extrapolated(choice, n, per_comparison, model.floor_supported)
        return choice

    def _say_extrapolated(self, choice: ThresholdChoice, n: int, per: float, supported: float) -> None:
        if choice.extrapolated != self._was_extrapolated:
            if choice.extrapolated and per < supported:
                log.warning(
                    "threshold %.4f for %d faces extrapolates: it needs a per-comparison false-match rate of %.2g, "
                    "below the %.2g the measured impostor pairs support; the fitted tail decides",
                    choice.value,
                    n,
                    per,
                    supported,
                )
            elif choice.extrapolated:
                log.warning(
                    "threshold %.4f for %d faces extrapolates: the bound on the measured pairs puts it beyond "
                    "every measured pair; the fitted tail decides",
                    choice.value,
                    n,
                )
            elif self._was_extrapolated is not None:
                log.info("threshold %.4f for %d faces rests on measured pairs again", choice.value, n)
            self._was_extrapolated = choice.extrapolated

    def expected_fpir(self, threshold: float, gallery_size: int) -> float:
        return _fpir(self.record.exceedance_bounds(threshold)[1], gallery_size)

    def pair_threshold(self) -> float:
        return self._pair

    def best_of_threshold(self, comparisons: int) -> float:
        per_pair = self.record.exceedance_bounds(self._pair)[2]  # the 1:1 false-accept rate (upper bound)
        if comparisons <= 1 or per_pair <= 0:
            return self._pair
        return min(1.0, max(self._pair, self.record.lowest_with_high_at_most(_per_comparison(per_pair, comparisons))))


def _per_comparison(fpir: float, n: int) -> float:
    return -math.expm1(math.log1p(-fpir) / n)  # 1 - (1 - fpir)^(1/n), stably


def _fpir(p: float, n: int) -> float:
    return float(-math.expm1(n * math.log1p(-min(p, 1 - 1e-15))))


def one_to_one_threshold(tail: ImpostorTail, far: float, confidence: float = CONFIDENCE) -> float:
    """The lowest cosine whose upper-bound 1:1 false-accept rate is at most `far`."""
    synthetic, real = record_counts(tail)
    return ImpostorModel(PairTail.of(tail), synthetic, real, confidence=confidence).lowest_with_high_at_most(far)


# --- fitting a record --------------------------------------------------------------------


def fit_impostor_tail(
    pair_scores: NDArray[np.floating],
    *,
    min_excesses: int = 2000,
    top1: NDArray[np.floating] | None = None,
    gallery_size: int = 0,
    measured_on: str = "",
    real_scores: NDArray[np.floating] | None = None,
    people: list[str] | None = None,
) -> ImpostorTail:
    """Summarise impostor cosines for a manifest.

    `pair_scores` are 1:1 impostor comparisons (different people). The body is kept as
    quantiles at exceedance 0.5 .. 1e-k, as far as the sample supports (at least 20
    scores beyond each). Above a start that leaves `min_excesses` scores (and at most
    the top 5%), the excesses get a generalised Pareto fit by probability-weighted
    moments (Hosking & Wallis 1987). Exceedance counts on `GRID` are kept for the
    confidence bounds; `real_scores`, when given, are real-against-real impostor pairs,
    kept as counts only (they measure the synthetic-to-real gap). `top1`, when given, are
    the best scores of non-mated searches against `gallery_size` identities, kept for reports.
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
    real = PairCounts.of(real_scores) if real_scores is not None and len(real_scores) else None
    return ImpostorTail(
        gallery_size=gallery_size,
        quantiles=quantiles,
        pair_tail={"start": round(start, 6), "p0": p0, "sigma": round(sigma, 7), "xi": round(xi, 5), "n": float(n)},
        top1=top1_q,
        measured_on=measured_on,
        grid=list(GRID),
        counts=list(PairCounts.of(scores).counts),
        real_counts=list(real.counts) if real else [],
        real_pairs=real.pairs if real else 0,
        people=list(people or []),
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
