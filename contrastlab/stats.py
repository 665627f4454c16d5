"""The book's one rule for deciding a paper's claim from per-seed results.

A claim has two arms, each a list of per-seed values of one metric (say linear-probe accuracy),
and a direction: arm ``a`` is the one the paper says is better. `compare_arms` returns the
difference of the means, its standard error and the verdict:

- diff = mean(a) - mean(b), positive in the paper's direction;
- SE = sqrt(s_a^2 / n_a + s_b^2 / n_b), sample SDs (ddof = 1);
- t = the 97.5% quantile of Student's t at the Welch-Satterthwaite degrees of freedom, so that
  diff +- t SE is the 95% confidence interval of the difference;
- **reproduced** if diff > t SE, **reversed** if diff < -t SE, else **not resolved**;
  with SE = 0 (both arms deterministic) the sign of diff decides.

Paired design (both arms share seed i, i.e. initialisation and data order): the per-seed
differences d_i = a_i - b_i give diff = mean(d), SE = sd(d) / sqrt(n), df = n - 1.

`mdd` is the smallest true difference the rule resolves at n seeds an arm given the seed SD of
one arm: t(0.975, 2n - 2) sqrt(2 / n) SD.

A claim about a correlation over many encoders (Wang & Isola: the more aligned and the more uniform
an encoder, the better its probe) has no two arms; `rank_correlation` gives Spearman's rho and
its 95% bootstrap interval (encoders resampled with replacement), and the same three verdicts:
**reproduced** if the interval lies wholly on the paper's side of 0, **reversed** if wholly on
the other, else **not resolved**. Nothing here trains or reads records.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from scipy.stats import t as _student_t

__all__ = ["VERDICTS", "Comparison", "Correlation", "compare_arms", "mdd", "mean_se", "rank_correlation", "t975"]

VERDICTS = ("reproduced", "not resolved", "reversed")


@dataclass(frozen=True)
class Comparison:
    """The outcome of `compare_arms`: ``diff`` +- ``half_width`` is the 95% interval."""

    diff: float          # mean(a) - mean(b) (or mean of the paired differences)
    se: float            # standard error of diff
    df: float            # degrees of freedom of t (inf when se = 0)
    half_width: float    # t(0.975, df) * se
    verdict: str         # one of VERDICTS
    paired: bool
    n_a: int
    n_b: int

    def as_dict(self) -> dict:
        return asdict(self)


def t975(df: float) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (df > 0)."""
    if not df > 0:
        raise ValueError(f"df must be > 0, got {df!r}")
    return float(_student_t.ppf(0.975, df))


def _values(name: str, values) -> list[float]:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of numbers (one per seed), got {values!r}") from None
    if len(out) < 2:
        raise ValueError(f"{name} needs at least 2 values (one per seed) to estimate its spread, got {len(out)}")
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must hold finite numbers, got {out}")
    return out


def _var(x: list[float]) -> float:
    m = sum(x) / len(x)
    return sum((v - m) ** 2 for v in x) / (len(x) - 1)


def mean_se(values) -> tuple[float, float, int]:
    """(mean, standard error of the mean, n) of per-seed ``values`` (n >= 2)."""
    x = _values("values", values)
    return sum(x) / len(x), math.sqrt(_var(x) / len(x)), len(x)


def _decide(diff: float, se: float, df: float) -> tuple[float, str]:
    if se == 0:
        return 0.0, "reproduced" if diff > 0 else "reversed" if diff < 0 else "not resolved"
    h = t975(df) * se
    return h, "reproduced" if diff > h else "reversed" if diff < -h else "not resolved"


def compare_arms(a, b, *, paired: bool = False) -> Comparison:
    """Decide a claim from per-seed values: ``a`` the arm the paper says is better, ``b`` the other.

    Args:
        a, b: per-seed values of one metric, at least 2 each (the book uses >= 3); with
            ``paired``, equal lengths and value i of both arms from seed i.
        paired: compare the per-seed differences (df = n - 1) instead of Welch's two samples.

    Returns:
        A `Comparison` with ``diff``, ``se``, ``df``, ``half_width`` and ``verdict``.
    """
    a, b = _values("a", a), _values("b", b)
    if paired:
        if len(a) != len(b):
            raise ValueError(f"paired arms must have one value per seed each, got {len(a)} and {len(b)} values")
        d = [x - y for x, y in zip(a, b)]
        diff, se, df = sum(d) / len(d), math.sqrt(_var(d) / len(d)), len(d) - 1
    else:
        va, vb = _var(a) / len(a), _var(b) / len(b)
        diff, se = sum(a) / len(a) - sum(b) / len(b), math.sqrt(va + vb)
        denom = (va ** 2 / (len(a) - 1)) + (vb ** 2 / (len(b) - 1))
        df = (va + vb) ** 2 / denom if denom > 0 else math.inf
    half, verdict = _decide(diff, se, df)
    return Comparison(diff=diff, se=se, df=float(df), half_width=half, verdict=verdict, paired=paired,
                      n_a=len(a), n_b=len(b))


def mdd(sd: float, n: int) -> float:
    """Minimal detectable difference of the rule at ``n`` seeds an arm: t(0.975, 2n-2) sqrt(2/n) sd."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an int >= 2 (seeds an arm), got {n!r}")
    if not sd >= 0:
        raise ValueError(f"sd must be >= 0, got {sd!r}")
    return t975(2 * n - 2) * math.sqrt(2 / n) * sd


@dataclass(frozen=True)
class Correlation:
    """The outcome of `rank_correlation`: Spearman's ``rho`` and its 95% bootstrap interval."""

    rho: float
    low: float
    high: float
    n: int               # encoders (points)
    n_boot: int          # bootstrap resamples
    direction: int       # the paper's sign of rho: -1 or +1
    verdict: str         # one of VERDICTS

    def as_dict(self) -> dict:
        return asdict(self)


def _ranks(x: list[float]) -> list[float]:
    """Ranks 1..n, ties given their mean rank."""
    order = sorted(range(len(x)), key=x.__getitem__)
    ranks = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _spearman(x: list[float], y: list[float]) -> float:
    """Pearson's correlation of the ranks; 0 when either side has no spread."""
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else 0.0


def rank_correlation(x, y, *, direction: int, n_boot: int = 2000, seed: int = 0) -> Correlation:
    """Spearman's rho of ``x`` against ``y`` (one value each per encoder) with a percentile bootstrap.

    Args:
        x, y: equal-length sequences, at least 4 points.
        direction: the sign the paper predicts for rho, -1 or +1.
        n_boot: bootstrap resamples of the points (with replacement).
        seed: seed of the resampling, so the interval is reproducible.
    """
    import random
    x, y = _values("x", x), _values("y", y)
    if len(x) != len(y):
        raise ValueError(f"x and y must have one value per encoder each, got {len(x)} and {len(y)} values")
    if len(x) < 4:
        raise ValueError(f"rank_correlation needs at least 4 points, got {len(x)}")
    if direction not in (-1, 1):
        raise ValueError(f"direction must be -1 or +1, got {direction!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 100:
        raise ValueError(f"n_boot must be an int >= 100, got {n_boot!r}")
    rng = random.Random(seed)
    n = len(x)
    boot = []
    for _ in range(n_boot):
        idx = [rng.randrange(n) for _ in range(n)]
        boot.append(_spearman([x[i] for i in idx], [y[i] for i in idx]))
    boot.sort()
    low, high = boot[int(0.025 * n_boot)], boot[min(n_boot - 1, int(0.975 * n_boot))]
    signed_low, signed_high = sorted((direction * low, direction * high))
    verdict = "reproduced" if signed_low > 0 else "reversed" if signed_high < 0 else "not resolved"
    return Correlation(rho=_spearman(x, y), low=low, high=high, n=n, n_boot=n_boot, direction=direction,
                       verdict=verdict)
