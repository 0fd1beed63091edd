import numpy as np
import pytest

from service.threshold import FixedThreshold, GalleryAwareThreshold, PairTail, fit_impostor_tail


@pytest.fixture(scope="module")
def impostors() -> np.ndarray:
    # Impostor cosines of a decent 128-d model look roughly Gaussian around 0.1.
    return np.random.default_rng(0).normal(0.1, 0.09, 400_000)


def test_tail_quantiles_and_exceedance_invert_each_other(impostors: np.ndarray) -> None:
    tail = PairTail.of(fit_impostor_tail(impostors))
    for p in (0.3, 0.05, 1e-3, 1e-5, 1e-7):
        assert tail.exceedance(tail.score_at(p)) == pytest.approx(p, rel=1e-6)
    for p in (0.1, 0.01, 1e-3):  # the body follows the sample
        assert tail.score_at(p) == pytest.approx(np.quantile(impostors, 1 - p), abs=3e-3)


def test_threshold_grows_with_the_gallery_and_keeps_fpir_at_the_target(impostors: np.ndarray) -> None:
    policy = GalleryAwareThreshold(fit_impostor_tail(impostors), target_fpir=0.01, pair_threshold=0.0)
    values = [policy.threshold(n)[0] for n in (1, 100, 10_000, 1_000_000)]
    assert values == sorted(values) and values[0] < values[-1]
    for n in (1, 100, 10_000):
        _, fpir, source = policy.threshold(n)
        assert source == "gallery"
        assert fpir == pytest.approx(0.01, rel=1e-3)


def test_measured_fpir_of_simulated_strangers_stays_near_the_target(impostors: np.ndarray) -> None:
    policy = GalleryAwareThreshold(fit_impostor_tail(impostors), target_fpir=0.05, pair_threshold=0.0)
    rng = np.random.default_rng(1)
    fixed = policy.threshold(100)[0]  # a fixed threshold tuned on a small gallery
    fixed_rates, aware_rates = [], []
    for n in (100, 1_000, 10_000):
        best = rng.normal(0.1, 0.09, (2_000, n)).max(axis=1)  # 2000 strangers' top-1 scores
        aware_rates.append(float((best >= policy.threshold(n)[0]).mean()))
        fixed_rates.append(float((best >= fixed).mean()))
    assert all(0.025 <= r <= 0.1 for r in aware_rates), aware_rates  # within 2x of the target
    assert fixed_rates[-1] > 5 * fixed_rates[0]  # a fixed threshold lets ever more strangers through


def test_fit_needs_enough_scores_and_fixed_policy_is_fixed() -> None:
    with pytest.raises(ValueError, match="at least 1000"):
        fit_impostor_tail(np.zeros(10))
    fixed = FixedThreshold(0.42, "fixed")
    assert fixed.threshold(10) == fixed.threshold(10**6) == (0.42, None, "fixed")
    assert fixed.pair_threshold() == 0.42


def test_the_threshold_never_drops_below_the_one_to_one_threshold(impostors: np.ndarray) -> None:
    policy = GalleryAwareThreshold(fit_impostor_tail(impostors), target_fpir=0.01, pair_threshold=0.45)
    small, expected, _ = policy.threshold(10)
    assert small == 0.45 and expected is not None and expected < 0.01  # stricter than the target asks
    assert policy.threshold(10**7)[0] > 0.45
