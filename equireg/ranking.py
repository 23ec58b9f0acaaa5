"""Ranks of methods with their uncertainty: paired tests per metric, Learn2Reg-style scores, and a
bootstrap interval of each method's rank.

Per metric, every two methods are compared on the cases (test pairs) both were scored on, with a
two-sided Wilcoxon signed-rank test; the p-values of all comparisons of that metric are
Holm-corrected. A method *wins* against another when the corrected p is below :data:`ALPHA` and
its mean paired difference points the good way. Methods are ordered by their wins (ties share the
average position) and the positions mapped linearly onto rank scores from 0.1 (worst) to 1 (best),
as Learn2Reg does; a method's aggregate score is the geometric mean of its metric scores, and its
rank is its position by aggregate score (1 = best, ties share the smallest). Resampling the cases
with replacement and ranking again gives the 95 % interval of each rank: rankings flip with small
changes of the test set (Maier-Hein et al., Nat. Commun. 2018), and the interval says how much.

Where this differs from Learn2Reg's ranking code (MDL-UzL/L2R ``ranking/``), and why:
- paired Wilcoxon signed-rank tests (its README says so; its code runs the unpaired rank-sum test,
  which ignores that all methods are scored on the same pairs and loses power);
- Holm's correction over the comparisons of a metric (it tests each at p < 0.05 alone, so with many
  methods some "wins" are chance);
- DSC30 compares the same 30 % of cases for every method, those with the lowest unregistered Dice
  (as its ``rubustify``), but over cases, not (case, label) entries, since the retina has one label;
- SDlogJ is the standard deviation of log J with J clipped to [1e-9, 1e9] and folds are counted on the
  raw Jacobian (its SDlogJ takes log(J + 3), and its fold count, taken after that shift, is always 0);
- runtime is not ranked: it depends on the machine, and timings never go into result files
  (seconds per pair are in the run's ``benchmarks/``).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from equireg.uncertainty import LEVEL, SEED, signed_rank_p

ALPHA = 0.05
#: bootstrap resamples of the cases for the rank interval (each one reruns every test)
RANK_RESAMPLES = 500


#: DSC30's share of the cases: those with the lowest unregistered Dice
HARDEST_SHARE = 0.3


@dataclass(frozen=True)
class Metric:
    """A metric to rank by: a per-case score ``column``, whether higher is better, and, for a metric
    on the hardest cases only (DSC30), the per-case column that picks them (the lowest
    :data:`HARDEST_SHARE` of ``hardest_by``, the same cases for every method)."""

    name: str
    column: str
    higher_is_better: bool
    hardest_by: str | None = None

    def scores(self, values: dict[str, np.ndarray], take: np.ndarray) -> np.ndarray:
        """This metric's ``[methods, cases]`` scores on the cases ``take`` (indices, repeats allowed)."""
        scores = values[self.column][:, take]
        if self.hardest_by is None:
            return scores
        before = values[self.hardest_by][0, take]
        hardest = np.argsort(before, kind="stable")[:max(1, int(np.ceil(HARDEST_SHARE * len(take))))]
        return scores[:, hardest]


def columns_read(metrics: list[Metric]) -> list[str]:
    """The per-case columns that ranking by ``metrics`` reads."""
    return sorted({m.column for m in metrics} | {m.hardest_by for m in metrics if m.hardest_by})


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error rate), in the input order."""
    p_values = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p_values, kind="stable")
    scaled = p_values[order] * (len(p_values) - np.arange(len(p_values)))
    adjusted = np.empty_like(p_values)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


def wins(scores: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Per method (rows of ``scores`` ``[methods, cases]``), the number of methods it beats
    significantly: Wilcoxon signed-rank over the cases, Holm-corrected over all comparisons."""
    pairs = list(combinations(range(len(scores)), 2))
    won = np.zeros(len(scores), dtype=int)
    if not pairs:
        return won
    first, second = np.array(pairs).T
    adjusted = holm(signed_rank_p(scores[first] - scores[second]))
    sign = 1.0 if higher_is_better else -1.0
    for (a, b), p in zip(pairs, adjusted):
        if p < ALPHA:
            difference = sign * float(np.mean(scores[a] - scores[b]))
            won[a if difference > 0 else b] += difference != 0
    return won


def rank_scores(won: np.ndarray) -> np.ndarray:
    """Wins -> scores from 0.1 (fewest) to 1 (most), linear in the position; ties share their mean."""
    count = len(won)
    scale = np.linspace(0.1, 1.0, count) if count > 1 else np.ones(1)
    positions = np.argsort(np.argsort(won, kind="stable"), kind="stable")
    scores = scale[positions]
    for value in np.unique(won):
        scores[won == value] = scores[won == value].mean()
    return scores


def aggregate(values: dict[str, np.ndarray], metrics: list[Metric],
              take: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(aggregate score per method, score per metric) on the cases ``take`` of ``values[column]``
    (``[methods, cases]`` each)."""
    per_metric = {m.name: rank_scores(wins(m.scores(values, take), m.higher_is_better)) for m in metrics}
    return np.exp(np.mean([np.log(s) for s in per_metric.values()], axis=0)), per_metric


def ranks(scores: np.ndarray) -> np.ndarray:
    """1 for the highest aggregate score; tied methods share the best of their ranks."""
    return np.array([1 + int(np.sum(scores > s + 1e-12)) for s in scores])


def rank_methods(table: pd.DataFrame, metrics: list[Metric], case: str | list[str] = "pair",
                 method: str = "method", resamples: int = RANK_RESAMPLES) -> pd.DataFrame:
    """Rank the methods of ``table`` (one row per method and case, a column per metric).

    Only cases that every method was scored on take part. Returns one row per method, best first:
    ``score_<metric>`` per metric, ``score`` (their geometric mean), ``rank`` and its bootstrap
    interval ``rank_low``/``rank_high`` over ``resamples`` resamplings of the cases (seeded).
    """
    columns = columns_read(metrics)
    wide = table.pivot_table(index=case, columns=method, values=columns, aggfunc="first").dropna()
    names = sorted(table[method].unique())
    if wide.empty:
        raise ValueError(f"rank_methods: no case with scores of every method ({', '.join(names)})")
    values = {c: wide[c][names].to_numpy().T for c in columns}  # [methods, cases]
    count = len(wide)
    score, per_metric = aggregate(values, metrics, np.arange(count))
    rank = ranks(score)
    rng = np.random.default_rng(SEED)
    resampled = [ranks(aggregate(values, metrics, rng.integers(0, count, count))[0]) for _ in range(resamples)]
    tail = (1 - LEVEL) / 2
    low, high = (np.quantile(np.array(resampled), [tail, 1 - tail], axis=0, method="nearest")
                 if resamples else (rank, rank))
    result = pd.DataFrame({method: names, **{f"score_{m.name}": per_metric[m.name] for m in metrics},
                           "score": score, "rank": rank, "rank_low": np.asarray(low, dtype=int),
                           "rank_high": np.asarray(high, dtype=int), "cases": count})
    return result.sort_values(["rank", method], ignore_index=True)


def rank_text(row: pd.Series) -> str:
    """``2 [1, 3]``: a rank with its 95 % interval."""
    return f"{int(row['rank'])} [{int(row['rank_low'])}, {int(row['rank_high'])}]"
