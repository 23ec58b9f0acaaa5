"""Uncertainty of the benchmark's means: bootstrap confidence intervals over test pairs and paired
tests between methods on the same pairs.

Resampling uses a fixed seed, so a table with intervals is byte-reproducible like every other.
"""

from __future__ import annotations

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
    if not np.any(a - b):
        return 1.0
    return float(stats.wilcoxon(a, b, zero_method="zsplit", alternative="two-sided").pvalue)
