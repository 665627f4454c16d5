"""The verdict rule (contrastlab.stats) against hand-worked cases and scipy's own Welch test."""
import math

import pytest
from scipy import stats as sps

from contrastlab import stats


def test_t975_matches_tables():
    assert stats.t975(2) == pytest.approx(4.303, abs=1e-3)
    assert stats.t975(4) == pytest.approx(2.776, abs=1e-3)
    assert stats.t975(1e6) == pytest.approx(1.960, abs=1e-3)
    with pytest.raises(ValueError, match="df must be > 0"):
        stats.t975(0)


def test_welch_by_hand():
    a, b = [0.80, 0.82, 0.84], [0.70, 0.71, 0.75]
    r = stats.compare_arms(a, b)
    va, vb = 0.02 ** 2 / 3, (sum((x - 0.72) ** 2 for x in b) / 2) / 3
    assert r.diff == pytest.approx(0.82 - 0.72)
    assert r.se == pytest.approx(math.sqrt(va + vb))
    assert r.df == pytest.approx((va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2))
    assert r.half_width == pytest.approx(sps.t.ppf(0.975, r.df) * r.se)
    assert r.verdict == "reproduced"
    assert stats.compare_arms(b, a).verdict == "reversed"


def test_welch_interval_agrees_with_scipy():
    a, b = [0.61, 0.66, 0.59, 0.63], [0.60, 0.58, 0.64]
    r = stats.compare_arms(a, b)
    t, p = sps.ttest_ind(a, b, equal_var=False)
    assert r.diff / r.se == pytest.approx(t)
    # the interval excludes 0 exactly when the two-sided Welch p-value is below 0.05
    assert (r.verdict != "not resolved") == (p < 0.05)
    assert r.verdict == "not resolved"


def test_paired_uses_per_seed_differences():
    a, b = [0.80, 0.70, 0.90], [0.79, 0.69, 0.885]   # a big seed effect, a small steady gain
    assert stats.compare_arms(a, b).verdict == "not resolved"      # the seed spread hides it unpaired
    r = stats.compare_arms(a, b, paired=True)
    d = [0.01, 0.01, 0.015]
    assert r.df == 2 and r.diff == pytest.approx(sum(d) / 3)
    assert r.se == pytest.approx(sps.sem(d))
    assert r.verdict == "reproduced"
    with pytest.raises(ValueError, match="one value per seed"):
        stats.compare_arms([1, 2, 3], [1, 2], paired=True)


def test_zero_spread_sign_decides():
    assert stats.compare_arms([1, 1, 1], [0, 0, 0]).verdict == "reproduced"
    assert stats.compare_arms([0, 0, 0], [1, 1, 1]).verdict == "reversed"
    assert stats.compare_arms([1, 1, 1], [1, 1, 1]).verdict == "not resolved"
    # one deterministic arm: Welch's df comes from the other alone
    r = stats.compare_arms([0.5, 0.6, 0.7], [0.2, 0.2, 0.2])
    assert r.df == pytest.approx(2) and r.verdict == "reproduced"


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="a needs at least 2 values"):
        stats.compare_arms([0.5], [0.4, 0.3])
    with pytest.raises(TypeError, match="b must be a sequence of numbers"):
        stats.compare_arms([0.5, 0.4], ["x", 0.3])
    with pytest.raises(ValueError, match="finite"):
        stats.compare_arms([0.5, float("nan")], [0.4, 0.3])


def test_mdd_formula_and_mean_se():
    assert stats.mdd(0.01, 3) == pytest.approx(sps.t.ppf(0.975, 4) * math.sqrt(2 / 3) * 0.01)
    assert stats.mdd(0.01, 5) < stats.mdd(0.01, 3)
    with pytest.raises(ValueError, match="n must be an int >= 2"):
        stats.mdd(0.01, 1)
    mean, se, n = stats.mean_se([0.1, 0.2, 0.3])
    assert (mean, n) == (pytest.approx(0.2), 3) and se == pytest.approx(0.1 / math.sqrt(3))


def test_rank_correlation_is_spearman_with_ties():
    x = [0.3, 0.1, 0.3, 0.9, 0.5, 0.2, 0.7]
    y = [0.5, 0.9, 0.4, 0.1, 0.4, 0.8, 0.3]
    r = stats.rank_correlation(x, y, direction=-1)
    assert r.rho == pytest.approx(sps.spearmanr(x, y).statistic)
    assert r.low <= r.rho <= r.high and r.n == len(x)


def test_rank_correlation_verdict_follows_the_interval():
    x = list(range(12))
    up = [v + (0.5 if v % 2 else 0) for v in x]                  # monotone in x: rho = 1
    assert stats.rank_correlation(x, up, direction=+1).verdict == "reproduced"
    assert stats.rank_correlation(x, up, direction=-1).verdict == "reversed"
    noise = [5, 1, 9, 3, 11, 0, 7, 2, 10, 4, 8, 6]               # no relation to x
    flat = stats.rank_correlation(x, noise, direction=-1)
    assert flat.low < 0 < flat.high and flat.verdict == "not resolved"
    again = stats.rank_correlation(x, noise, direction=-1)
    assert (again.low, again.high) == (flat.low, flat.high)       # the resampling is seeded


def test_rank_correlation_bad_input_is_named():
    with pytest.raises(ValueError, match="direction"):
        stats.rank_correlation([1, 2, 3, 4], [4, 3, 2, 1], direction=0)
    with pytest.raises(ValueError, match="one value per encoder"):
        stats.rank_correlation([1, 2, 3, 4], [4, 3, 2], direction=1)
    with pytest.raises(ValueError, match="at least 4 points"):
        stats.rank_correlation([1, 2, 3], [3, 2, 1], direction=1)
