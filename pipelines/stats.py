"""Small, exact statistics for comparing two models on the same held-out pairs.

Why our own: the gate's decision rests on these few numbers, so they are pure functions
a unit test pins against textbook values (and SciPy where it is installed), with no
hidden defaults. Everything is seeded; the same input gives the same interval.

- :func:`binom_test`: exact binomial test of a win count against p = 0.5.
- :func:`clopper_pearson`: exact interval for a proportion.
- :func:`bootstrap_ci`: percentile bootstrap interval of a mean.
- :func:`paired_bootstrap_diff`: interval of mean(a) - mean(b) when a and b are
  measured on the same items (resampling items keeps the pairing, so the interval is
  much narrower than two independent intervals would suggest).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

Alternative = Literal["greater", "less", "two-sided"]


def binom_logpmf(k: int, n: int, p: float) -> float:
    """log P(X = k) for X ~ Binomial(n, p), stable for large n."""
    if p <= 0.0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if k == n else -math.inf
    return (
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
        + k * math.log(p) + (n - k) * math.log1p(-p)
    )


def _logsumexp(values: Sequence[float]) -> float:
    finite = [v for v in values if v != -math.inf]
    if not finite:
        return -math.inf
    m = max(finite)
    return m + math.log(sum(math.exp(v - m) for v in finite))


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return min(1.0, math.exp(_logsumexp([binom_logpmf(i, n, p) for i in range(k, n + 1)])))


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return min(1.0, math.exp(_logsumexp([binom_logpmf(i, n, p) for i in range(0, k + 1)])))


def binom_test(k: int, n: int, p: float = 0.5, alternative: Alternative = "greater") -> float:
    """Exact binomial test p-value of ``k`` successes in ``n`` trials under H0: rate = ``p``.

    ``greater`` asks whether the true rate exceeds ``p`` (the gate's question: does the
    candidate win more than half of the pairs?). ``two-sided`` sums every outcome no
    more likely than the observed one (the convention of R and SciPy).
    """
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 1.0
    if alternative == "greater":
        return binom_sf(k, n, p)
    if alternative == "less":
        return binom_cdf(k, n, p)
    observed = binom_logpmf(k, n, p)
    tol = math.log1p(1e-7)
    terms = [lp for i in range(n + 1) if (lp := binom_logpmf(i, n, p)) <= observed + tol]
    return min(1.0, math.exp(_logsumexp(terms)))


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (conservative) interval for a binomial proportion, by bisection on the tails."""
    if n == 0:
        return (0.0, 1.0)
    alpha = 1.0 - confidence

    def solve(f, target: float) -> float:  # f increasing in p
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if f(mid) < target:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    lower = 0.0 if k == 0 else solve(lambda q: binom_sf(k, n, q), alpha / 2)
    upper = 1.0 if k == n else solve(lambda q: 1.0 - binom_cdf(k, n, q), 1.0 - alpha / 2)
    return (lower, upper)


RESAMPLE_CELLS = 1 << 22
"""Resampled values held at once (~64 MB with their indices), whatever the number of items."""


def _resample_means(x: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Means of ``n_boot`` resamples of ``x`` with replacement, drawn a block of rows at a time.

    Why blocks: the whole ``n_boot x n`` table took ~3 GB at 100k test pairs. The draws
    come from one generator in the same order, so the means equal the one-table ones.
    """
    rng = np.random.default_rng(seed)
    rows = max(1, RESAMPLE_CELLS // max(x.size, 1))
    means = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, rows):
        stop = min(n_boot, start + rows)
        means[start:stop] = x[rng.integers(0, x.size, size=(stop - start, x.size))].mean(axis=1)
    return means


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (items resampled with replacement)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return (math.nan, math.nan)
    means = _resample_means(x, n_boot, seed)
    tail = (1.0 - confidence) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return (float(lo), float(hi))


def paired_bootstrap_diff(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """mean(a) - mean(b) over the same items, with a percentile interval from joint resampling.

    Returns ``diff``, ``ci_low``, ``ci_high`` and ``p_le_zero`` (the bootstrap share of
    resamples with a difference <= 0, a one-sided bootstrap p-value).
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in shape: {x.shape} vs {y.shape}")
    if x.size == 0:
        return {"diff": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_le_zero": math.nan}
    d = x - y
    diffs = _resample_means(d, n_boot, seed)
    tail = (1.0 - confidence) / 2 * 100
    lo, hi = np.percentile(diffs, [tail, 100 - tail])
    return {
        "diff": float(d.mean()),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "p_le_zero": float((diffs <= 0).mean()),
    }


def proportion_summary(
    successes: Sequence[bool] | np.ndarray, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Rate, count, bootstrap and exact intervals and one-sided binomial p (H1: rate > 0.5)."""
    s = np.asarray(successes, dtype=bool)
    n, k = int(s.size), int(s.sum())
    lo, hi = bootstrap_ci(s.astype(float), n_boot, confidence, seed)
    e_lo, e_hi = clopper_pearson(k, n, confidence)
    return {
        "rate": k / n if n else math.nan,
        "k": k,
        "n": n,
        "ci_low": lo,
        "ci_high": hi,
        "exact_ci_low": e_lo,
        "exact_ci_high": e_hi,
        "p_value": binom_test(k, n, 0.5, "greater"),
        "p_value_two_sided": binom_test(k, n, 0.5, "two-sided"),
    }
