"""Uncertainty of the benchmark's means: bootstrap confidence intervals over test pairs and paired
tests between methods on the same pairs.

Resampling uses a fixed seed, so a table with intervals is byte-reproducible like every other.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy import stats

RESAMPLES = 10_000
LEVEL = 0.95
SEED = 0


def bootstrap_ci(values: Sequence[float] | np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (``RESAMPLES`` resamples, seeded).

    One value gives the degenerate interval ``(v, v)``; no values is an error.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("bootstrap_ci: no values")
    if values.size == 1:
        return float(values[0]), float(values[0])
    rng = np.random.default_rng(SEED)
    means = values[rng.integers(0, values.size, size=(RESAMPLES, values.size))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def wilcoxon_p(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the paired differences ``a - b`` (same pairs).

    Identical samples give 1.0. With n pairs the smallest possible p is 2 / 2^n (0.125 for 4
    pairs), so a small test set cannot show significance: the claims print n beside p.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"wilcoxon_p: paired samples of equal length expected, got {a.shape} and {b.shape}")
    return float(signed_rank_p((a - b)[None])[0])


#: the signed-rank test's regimes, as scipy.stats.wilcoxon's method="auto" (scipy 1.17) picks them
EXACT_CASES = 50        # no ties or zeros: the exact null distribution up to this many cases
PERMUTATION_CASES = 13  # ties or zeros: every sign flip enumerated (2^n) up to this many
_PERMUTATION_CHUNK = 256


@lru_cache(maxsize=None)
def _signed_rank_counts(cases: int) -> np.ndarray:
    """How many of the 2^n sign patterns give each rank sum T+ = 0 .. n(n+1)/2 (no ties)."""
    counts = np.zeros(cases * (cases + 1) // 2 + 1)
    counts[0] = 1
    for rank in range(1, cases + 1):
        counts[rank:] = counts[rank:] + counts[:-rank].copy()
    return counts


def signed_rank_p(differences: np.ndarray) -> np.ndarray:
    """Two-sided Wilcoxon signed-rank p-values of paired differences ``[tests, cases]``, one test per
    row, zeros split between the signs (``zero_method="zsplit"``): exact without ties or zeros up to
    :data:`EXACT_CASES` cases; with them, every sign flip up to :data:`PERMUTATION_CASES` cases; else
    the normal approximation with the tie correction. These are scipy's choices (1.17,
    ``method="auto"``), vectorised over tests: ranking methods with a bootstrap runs thousands."""
    differences = np.atleast_2d(np.asarray(differences, dtype=np.float64))
    tests, cases = differences.shape
    ranks = stats.rankdata(np.abs(differences), axis=-1)
    zero_half = 0.5 * np.sum(ranks * (differences == 0), axis=-1)
    plus = np.sum(ranks * (differences > 0), axis=-1) + zero_half
    ordered = np.sort(np.abs(differences), axis=-1)
    tie_sizes = [np.unique(row, return_counts=True)[1] for row in ordered]
    irregular = np.array([len(sizes) < cases for sizes in tie_sizes]) | np.any(differences == 0, axis=-1)
    # normal approximation
    mean = cases * (cases + 1) / 4
    variance = cases * (cases + 1) * (2 * cases + 1) / 24 - np.array([np.sum(t**3 - t) for t in tie_sizes]) / 48
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(variance > 0, 2 * stats.norm.sf(np.abs(plus - mean) / np.sqrt(variance)), 1.0)
    if cases <= EXACT_CASES:
        exact = ~irregular
        counts = _signed_rank_counts(cases)
        cdf, sf = np.cumsum(counts) / counts.sum(), np.cumsum(counts[::-1])[::-1] / counts.sum()
        statistic = np.rint(plus[exact]).astype(int)
        p[exact] = np.minimum(1.0, 2 * np.minimum(sf[statistic], cdf[statistic]))
    if cases <= PERMUTATION_CASES and irregular.any():
        patterns = (np.arange(2**cases)[:, None] >> np.arange(cases)) & 1  # [2^n, n]: which are positive
        rows = np.flatnonzero(irregular)
        for chunk in np.array_split(rows, max(1, len(rows) // _PERMUTATION_CHUNK)):
            signed = ranks[chunk] * (differences[chunk] != 0)
            null = signed @ patterns.T + zero_half[chunk, None]  # [tests, 2^n]
            tolerance = 1e-9 * np.maximum(1.0, plus[chunk, None])
            above = np.mean(null >= plus[chunk, None] - tolerance, axis=-1)
            below = np.mean(null <= plus[chunk, None] + tolerance, axis=-1)
            p[chunk] = np.minimum(1.0, 2 * np.minimum(above, below))
    return np.where(np.any(differences != 0, axis=-1), p, 1.0)
