"""ke.stats against independent computations: exact permutation p-values, scipy's asymptotic ones, a bootstrap
interval with a known answer, the spread over seeds."""
import math
import random

import numpy as np
import pytest
from scipy import stats as scipy_stats

from ke import stats
from ke.errors import UserError


def brute_force(x, y, alternative):
    result = scipy_stats.permutation_test((y,), lambda v: scipy_stats.spearmanr(x, v).statistic,
                                          permutation_type="pairings", n_resamples=math.inf, alternative=alternative)
    return result.pvalue


def test_exact_p_values_equal_a_brute_force_permutation_test():
    t = stats.spearman([1, 2, 3, 4], [4.0, 3.0, 2.5, 1.0])
    assert (t.rho, t.n) == (pytest.approx(-1), 4)
    assert t.p == pytest.approx(2 / 24) and t.p_down == pytest.approx(1 / 24) and t.p_up == pytest.approx(1.0)
    rng = random.Random(3)
    for n in (5, 7):
        x, y = list(range(n)), [rng.random() for _ in range(n)]
        t = stats.spearman(x, y)
        assert t.p == pytest.approx(brute_force(x, y, "two-sided"))
        assert t.p_down == pytest.approx(brute_force(x, y, "less"))
        assert t.p_up == pytest.approx(brute_force(x, y, "greater"))
    x, y = list(range(12)), [rng.random() for _ in range(12)]  # beyond 8 points: the t approximation
    assert stats.spearman(x, y).p == pytest.approx(scipy_stats.spearmanr(x, y).pvalue)


def test_trend_words_and_degenerate_series():
    assert stats.spearman([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]).direction() == "decreases"
    assert stats.spearman([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]).direction() == "increases"
    assert stats.spearman([1, 2, 3], [1, 3, 2]).direction() == "no significant trend"
    assert stats.spearman([1, 2], [1, 2]).n == 2 and "too few" in stats.spearman([1, 2], [1, 2]).describe()
    assert stats.spearman([1, 2, 3], [7, 7, 7]).p == 1.0
    assert stats.spearman([1, 2, None, 4], [1, 2, 3, None]).n == 2  # pairs with a None are dropped


def test_correlation_against_formulas():
    x, y = [1.0, 2.0, 4.0, 3.0, 6.0], [2.1, 3.9, 8.2, 5.8, 12.5]
    out = stats.correlation(x, y)
    assert out["pearson_r"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert out["spearman_r"] == pytest.approx(1.0) and out["n"] == 5
    with pytest.raises(UserError, match="at least 3"):
        stats.correlation([1, 2], [3, 4])


def test_bootstrap_interval_of_a_mean_has_the_normal_width():
    """The mean of n standard normal draws has standard error 1/sqrt(n): the 95% interval is +-1.96/sqrt(n)."""
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(400, 1))
    low, high = stats.bootstrap_interval(samples, lambda m: m[0], draws=4000)
    assert high - low == pytest.approx(2 * 1.96 / math.sqrt(400), rel=0.1)
    assert low < samples.mean() < high
    # the statistic sees the resampled mean row: an entropy-like function of a [n, k] matrix
    weights = rng.random((50, 8))
    low, high = stats.bootstrap_interval(weights, lambda m: float(-(m / m.sum() * np.log(m / m.sum())).sum()))
    full = weights.mean(0)
    assert low <= float(-(full / full.sum() * np.log(full / full.sum())).sum()) <= high
    assert stats.bootstrap_interval(weights, lambda m: m[0], seed=1) == stats.bootstrap_interval(weights, lambda m: m[0],
                                                                                                 seed=1)
    # the normal interval is centred on the full-sample value with the percentile interval's width (for a mean)
    low, high = stats.bootstrap_interval(samples, lambda m: m[0], draws=4000, method="normal")
    assert (low + high) / 2 == pytest.approx(samples.mean()) and high - low == pytest.approx(2 * 1.96 / 20, rel=0.1)


def test_spread_over_seeds():
    s = stats.spread([1.0, 2.0, 3.0])
    assert (s.mean, s.sd, s.low, s.high, s.n) == (2.0, 1.0, 1.0, 3.0, 3)
    half = scipy_stats.t.ppf(0.975, 2) / math.sqrt(3)
    assert s.interval == pytest.approx((2 - half, 2 + half))
    assert stats.spread([4.0]).describe() == "4.00 (one seed)"
