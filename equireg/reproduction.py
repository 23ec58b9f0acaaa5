"""Did this run reproduce the reference? Every headline number of the committed reference beside
this run's, the difference, and whether it lies within a tolerance taken from the data.

Tolerances come from measured spread, never from a guess: with several seeds, twice the
seed-to-seed standard deviation of this run's means; with one seed, the larger of the half-width of
the reference's 95 % bootstrap interval over test pairs (how well a mean over these pairs is
determined at all) and twice the difference measured between two runs of the same code on two CPU
kinds (``CROSS_CPU``: float32 rounds differently on each, and training amplifies it). A number
without a measured spread (equivariance, basin widths) is shown but not judged. The report never
fails a run: it tells the user what they reproduced.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from equireg import tables
from equireg.files import write_text

#: the tables whose headline numbers are compared (:func:`headlines`)
TABLES = ["retina", "retina_pairs", "lung", "equivariance", "landscape"]
#: retina headline: Dice of models trained on not-shifted pairs, on these test conditions
RETINA_TESTS = ("none", "shift")
#: the committed cross-CPU spread of the headline numbers (:func:`cross_cpu_spread`), beside the
#: reference it judges
CROSS_CPU = "cross_cpu_spread.csv"


def _seed_std(pairs: pd.DataFrame | None, keys: dict[str, str], value: str) -> float:
    """Standard deviation over seeds of the per-seed mean of ``value`` (NaN with one seed)."""
    if pairs is None or "seed" not in pairs:
        return float("nan")
    rows = pairs
    for column, wanted in keys.items():
        rows = rows[rows[column] == wanted]
    means = rows.groupby("seed")[value].mean()
    return float(means.std()) if len(means) > 1 else float("nan")


def _half_width(row: pd.Series, value: str) -> float:
    low, high = row.get(f"{value}_ci_low"), row.get(f"{value}_ci_high")
    return float((high - low) / 2) if low is not None and high is not None else float("nan")


def headlines(directory: str | Path) -> pd.DataFrame:
    """The headline numbers of one run's tables: ``quantity``, ``value``, ``seed_std`` and
    ``ci_half_width`` (NaN where not measured)."""
    directory = Path(directory)
    rows = []
    retina, pairs = tables.read_if_written(directory, "retina"), tables.read_if_written(directory, "retina_pairs")
    if retina is not None:
        chosen = retina[(retina.train_condition == "none") & (retina.test_set == "test")
                        & retina.test_condition.isin(RETINA_TESTS)]
        for row in chosen.itertuples(index=False):
            series = pd.Series(row._asdict())
            keys = {"method": row.method, "train_condition": "none", "test_set": "test",
                    "test_condition": row.test_condition}
            rows.append({"quantity": f"retina Dice, {row.method}, test {row.test_condition}", "value": row.dice,
                         "seed_std": _seed_std(pairs, keys, "dice"), "ci_half_width": _half_width(series, "dice")})
    lung = tables.read_if_written(directory, "lung")
    if lung is not None:
        for _, row in lung.iterrows():
            rows.append({"quantity": f"lung mTRE (mm), {row.method}", "value": row.mtre_mm, "seed_std": np.nan,
                         "ci_half_width": _half_width(row, "mtre_mm")})
    equivariance = tables.read_if_written(directory, "equivariance")
    if equivariance is not None:
        for row in equivariance[equivariance.case == "[W,U]"].itertuples(index=False):
            rows.append({"quantity": f"[W,U] median error (voxels), {row.method}", "value": row.median_error_vox,
                         "seed_std": np.nan, "ci_half_width": np.nan})
    landscape = tables.read_if_written(directory, "landscape")
    if landscape is not None:
        for row in landscape.itertuples(index=False):
            rows.append({"quantity": f"basin width, {row.transform}", "value": row.basin_width,
                         "seed_std": np.nan, "ci_half_width": np.nan})
    return pd.DataFrame(rows, columns=["quantity", "value", "seed_std", "ci_half_width"])


def cross_cpu_spread(first: str | Path, second: str | Path, runs: str) -> pd.DataFrame:
    """The headline numbers of two runs' tables (the same code, preset and seeds on two CPU kinds)
    and their absolute difference; ``runs`` says which runs they were (CPU kinds, commits)."""
    a, b = headlines(first).set_index("quantity"), headlines(second).set_index("quantity")
    shared = [quantity for quantity in a.index if quantity in b.index]
    return pd.DataFrame({"quantity": shared, "first": a.loc[shared, "value"].to_numpy(),
                         "second": b.loc[shared, "value"].to_numpy(),
                         "difference": (a.loc[shared, "value"] - b.loc[shared, "value"]).abs().to_numpy(),
                         "runs": runs})


def _tolerance(seed_std: float, ci_half_width: float, cross_cpu: float) -> tuple[float, str]:
    if np.isfinite(seed_std):
        return 2 * seed_std, "2 x seed std"
    # a number both CPUs gave exactly (a classical method, a grid-quantised width) measured no spread
    if cross_cpu > 0 and (not np.isfinite(ci_half_width) or 2 * cross_cpu > ci_half_width):
        return 2 * cross_cpu, "2 x cross-CPU difference"
    if np.isfinite(ci_half_width):
        return ci_half_width, "reference 95 % CI half-width"
    return float("nan"), "no spread measured"


def compare(reference: str | Path, run: str | Path, spread: pd.DataFrame | None = None) -> pd.DataFrame:
    """Reference and run headline numbers side by side with difference, tolerance and verdict;
    ``spread`` (:func:`cross_cpu_spread`) widens the tolerance of the numbers it measured."""
    ours = headlines(run).set_index("quantity")
    theirs = headlines(reference).set_index("quantity")
    cross_cpu = spread.set_index("quantity")["difference"] if spread is not None else pd.Series(dtype=float)
    rows = []
    for quantity in theirs.index:
        expected = theirs.loc[quantity]
        value = ours["value"].get(quantity, np.nan)
        tolerance, basis = _tolerance(ours["seed_std"].get(quantity, np.nan), expected["ci_half_width"],
                                      float(cross_cpu.get(quantity, np.nan)))
        difference = value - expected["value"]
        if not np.isfinite(value):
            verdict = "missing in this run"
        elif np.isfinite(tolerance):
            verdict = "within" if abs(difference) <= tolerance else "OUTSIDE"
        else:
            verdict = "not judged"
        rows.append({"quantity": quantity, "reference": expected["value"], "this_run": value,
                     "difference": difference, "tolerance": tolerance, "tolerance_from": basis, "result": verdict})
    return pd.DataFrame(rows)


def render(comparison: pd.DataFrame, reference: str | Path, spread: pd.DataFrame | None = None) -> str:
    judged = comparison[comparison.result.isin(["within", "OUTSIDE"])]
    outside = int((judged.result == "OUTSIDE").sum())
    summary = (f"{len(judged) - outside} of {len(judged)} judged headline numbers lie within their tolerance"
               + (f"; {outside} outside." if outside else "."))
    lines = [f"# Reproduction of `{reference}`", "",
             "Headline numbers of the committed reference beside this run's. Tolerance: twice the "
             "seed-to-seed standard deviation of this run (several seeds), else the larger of the "
             "half-width of the reference's 95 % bootstrap interval over test pairs and twice the "
             "difference measured between two runs on two CPU kinds; numbers without a measured spread "
             "are shown, not judged. Same machine and seed reproduce bit for bit; another CPU model "
             "rounds float32 differently, and training amplifies it (see README, Reproducibility).", ""]
    if spread is not None and not spread.empty:
        lines += [f"Cross-CPU difference measured between {spread['runs'].iloc[0]}.", ""]
    lines += [summary, "", tables.to_markdown(comparison)]
    return "\n".join(lines)


def write(reference: str | Path, run: str | Path, path: str | Path, spread: str | Path | None = None) -> None:
    """``reproduction.md`` comparing the tables in ``run`` with those in ``reference``, with the
    cross-CPU spread file ``spread`` where there is one."""
    measured = pd.read_csv(spread) if spread is not None and Path(spread).exists() else None
    write_text(path, render(compare(reference, run, measured), reference, measured))
