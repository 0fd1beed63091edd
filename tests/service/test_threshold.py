import logging
import math

import numpy as np
import pytest

from service.threshold import (
    FixedThreshold,
    GalleryAwareThreshold,
    PairCounts,
    PairTail,
    SelfTail,
    ThresholdChoice,
    binomial_bounds,
    fit_impostor_tail,
)


@pytest.fixture(scope="module")
def impostors() -> np.ndarray:
    # Impostor cosines of a decent 128-d model look roughly Gaussian around 0.1.
    return np.random.default_rng(0).normal(0.1, 0.09, 400_000)


def test_clopper_pearson_matches_closed_forms_and_covers() -> None:
    n = 4500
    assert binomial_bounds(0, n) == (0.0, pytest.approx(1 - 0.05 ** (1 / n), rel=1e-6))  # the rule of three
    assert binomial_bounds(n, n)[0] == pytest.approx(0.05 ** (1 / n), rel=1e-6)
    low, high = binomial_bounds(10, n)
    assert low < 10 / n < high
    # Coverage: the upper bound lies above the true p in about 95% of samples, not far fewer.
    rng = np.random.default_rng(3)
    p = 2e-3
    covered = [binomial_bounds(int(k), n)[1] >= p for k in rng.binomial(n, p, 400)]
    assert 0.93 <= np.mean(covered) <= 1.0


def test_pair_counts_count_at_or_above_and_round_conservatively() -> None:
    counts = PairCounts.of(np.array([0.1, 0.2, 0.3, 0.3, 0.42]))
    assert counts.pairs == 5
    assert counts.at(np.array([0.3]))[0] == 3 and counts.at(np.array([0.302]))[0] == 3  # grid 0.300 <= 0.302
    assert counts.at(np.array([-0.5]))[0] == 5 and counts.at(np.array([0.9]))[0] == 0
    assert (counts + counts).pairs == 10


def test_tail_quantiles_and_exceedance_invert_each_other(impostors: np.ndarray) -> None:
    tail = PairTail.of(fit_impostor_tail(impostors))
    for p in (0.3, 0.05, 1e-3, 1e-5, 1e-7):
        assert tail.exceedance(tail.score_at(p)) == pytest.approx(p, rel=1e-6)
    for p in (0.1, 0.01, 1e-3):  # the body follows the sample
        assert tail.score_at(p) == pytest.approx(np.quantile(impostors, 1 - p), abs=3e-3)


def test_threshold_grows_with_the_gallery_and_its_bound_keeps_the_target(impostors: np.ndarray) -> None:
    policy = GalleryAwareThreshold(fit_impostor_tail(impostors), target_fpir=0.01, pair_threshold=0.0)
    values = [policy.threshold(n)[0] for n in (1, 100, 10_000, 1_000_000)]
    assert values == sorted(values) and values[0] < values[-1]
    for n in (1, 100, 10_000):
        choice = policy.choose(n)
        assert choice.source == "gallery" and policy.threshold(n) == choice.as_tuple()
        assert choice.fpir_interval is not None and choice.expected_fpir is not None
        low, high = choice.fpir_interval
        assert low <= choice.expected_fpir <= high <= 0.01
        assert high > 0.008  # the bound is used up to the target, within the search grid's step


def test_measured_fpir_of_simulated_strangers_stays_under_the_target(impostors: np.ndarray) -> None:
    policy = GalleryAwareThreshold(fit_impostor_tail(impostors), target_fpir=0.05, pair_threshold=0.0)
    rng = np.random.default_rng(1)
    fixed = policy.threshold(100)[0]  # a fixed threshold tuned on a small gallery
    fixed_rates, aware_rates = [], []
    for n in (100, 1_000, 10_000):
        best = rng.normal(0.1, 0.09, (2_000, n)).max(axis=1)  # 2000 strangers' top-1 scores
        aware_rates.append(float((best >= policy.threshold(n)[0]).mean()))
        fixed_rates.append(float((best >= fixed).mean()))
    assert all(r <= 0.06 for r in aware_rates), aware_rates  # at or under the target (5%), within sampling
    assert aware_rates[0] >= 0.02  # where the pairs support it, not far under either
    assert fixed_rates[-1] > 5 * fixed_rates[0]  # a fixed threshold lets ever more strangers through


def test_real_pairs_heavier_than_the_fitted_ones_raise_the_threshold() -> None:
    """The synthetic-to-real gap: real impostors pass 3x as often; the bound follows them."""
    rng = np.random.default_rng(2)
    synthetic = rng.normal(0.1, 0.09, 200_000)
    # Real impostors: the same shape, shifted so that they pass a tail bar about 3x as often.
    real = rng.normal(0.125, 0.09, 20_000)
    blind = GalleryAwareThreshold(fit_impostor_tail(synthetic), 0.01, 0.0)
    aware = GalleryAwareThreshold(fit_impostor_tail(synthetic, real_scores=real), 0.01, 0.0)
    assert aware.record.gap_high > 2.0
    strangers = rng.normal(0.125, 0.09, (4_000, 100)).max(axis=1)  # real strangers against 100 faces
    blind_fpir = float((strangers >= blind.threshold(100)[0]).mean())
    aware_fpir = float((strangers >= aware.threshold(100)[0]).mean())
    assert blind_fpir > 0.015  # the synthetic record alone promises 1% and lets through more
    assert aware_fpir <= 0.012


def test_extrapolation_is_flagged_and_logged(impostors: np.ndarray, caplog: pytest.LogCaptureFixture) -> None:
    policy = GalleryAwareThreshold(fit_impostor_tail(impostors[:20_000]), 0.01, 0.0)
    with caplog.at_level(logging.WARNING, logger="service.threshold"):
        small = policy.choose(10)
        assert not small.extrapolated and not caplog.records
        huge = policy.choose(10**6)  # needs p ~ 1e-8 from 20,000 pairs
    assert huge.extrapolated and huge.basis == "fit"
    assert any("extrapolates" in r.getMessage() for r in caplog.records)
    assert huge.public()["extrapolated"] is True


def test_fit_needs_enough_scores_and_fixed_policy_is_fixed() -> None:
    with pytest.raises(ValueError, match="at least 1000"):
        fit_impostor_tail(np.zeros(10))
    fixed = FixedThreshold(0.42, "fixed")
    assert fixed.threshold(10) == fixed.threshold(10**6) == (0.42, None, "fixed")
    assert fixed.choose(10) == ThresholdChoice(0.42, None, None, "fixed")
    assert fixed.pair_threshold() == 0.42


def test_the_threshold_never_drops_below_the_one_to_one_threshold(impostors: np.ndarray) -> None:
    policy = GalleryAwareThreshold(fit_impostor_tail(impostors), target_fpir=0.01, pair_threshold=0.45)
    small, expected, _ = policy.threshold(10)
    assert small == 0.45 and expected is not None and expected < 0.01  # stricter than the target asks
    assert policy.threshold(10**7)[0] > 0.45


def test_a_self_tail_is_pooled_by_pair_count_once_it_has_enough_people(impostors: np.ndarray) -> None:
    record = fit_impostor_tail(impostors[:50_000], real_scores=impostors[50_000:54_500])
    policy = GalleryAwareThreshold(record, 0.01, 0.0)
    rng = np.random.default_rng(5)
    heavy = PairCounts.of(rng.normal(0.2, 0.09, 40_000))  # this gallery's people look more alike
    few = SelfTail(heavy, identities=9, identity_pairs=36)
    enough = SelfTail(heavy, identities=30, identity_pairs=435)
    assert policy.choose(1000, few).source == "gallery"  # too few pairs of people: the record decides
    chosen = policy.choose(1000, enough)
    assert chosen.source == "gallery-self"
    assert chosen.pairs == {
        "record_real": 4500,
        "record_synthetic": 50_000,
        "gallery": 40_000,
        "gallery_identity_pairs": 435,
    }
    assert chosen.value > policy.choose(1000).value  # the gallery's heavier tail raises the bar
    off = GalleryAwareThreshold(record, 0.01, 0.0, self_calibration=False)
    assert off.choose(1000, enough).source == "gallery"
    assert math.isclose(off.choose(1000, enough).value, policy.choose(1000).value)
