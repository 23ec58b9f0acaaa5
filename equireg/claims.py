"""The paper's claims, checked against the measured tables; written as ``claims.md``.

Each check states its criterion (the tolerance is part of the claim) and the numbers it used.
A claim whose table lacks the rows it needs is reported, under its title, as FAIL with the reason,
never skipped.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from equireg import tables
from equireg.files import write_csv, write_text
from equireg.uncertainty import bootstrap_ci, wilcoxon_p

#: claim 1: GradICON "fails" on shifted pairs if its Dice drops by more than this
GRADICON_DROP = 0.25
#: claim 2: CARL registers both "about equally well" if the Dice differ by at most this
CARL_TOLERANCE = 0.05
#: claim 3: the TwoStep basin must be at least this many times wider
BASIN_RATIO = 2.0
#: claim 4: largest 1-D toy error away from the ends
TOY_TOLERANCE = 0.01
#: claim 5: CARL's [W,U] median error (voxels) must stay below this; U-Nets' must be this many times larger
CARL_WU_VOXELS = 1.0
UNET_WU_FACTOR = 3.0

#: published COPDGene mTRE (mm), CVPR 2025 / NeurIPS 2024 tables (carl.md §5)
PAPER_COPDGENE_MM = {"carl": 1.88, "carl (IO)": 1.25, "gradicon": 1.93, "gradicon (IO)": 1.31,
                     "voxelmorph": 9.88}


@dataclass
class Claim:
    text: str
    criterion: str
    measured: str
    passed: bool


Check = Callable[..., tuple[str, str, bool]]


def titled(text: str) -> Callable[[Check], Callable[..., Claim]]:
    """Make a check, which returns (criterion, measured, passed), into a :class:`Claim` titled
    ``text``: a claim whose table lacks the rows it needs is titled too, and fails with the reason."""
    def decorate(check: Check) -> Callable[..., Claim]:
        @functools.wraps(check)
        def checked(*inputs: Any) -> Claim:
            try:
                return Claim(text, *check(*inputs))
            except (LookupError, KeyError) as missing:
                return Claim(text, "-", f"not measured: {missing}", False)
        return checked
    return decorate


def _dice(retina: pd.DataFrame, method: str, train: str, test: str) -> pd.Series:
    rows = retina[(retina.method == method) & (retina.train_condition == train)
                  & (retina.test_set == "test") & (retina.test_condition == test)]
    if rows.empty:
        raise LookupError(f"no retina result for {method}, trained on {train}, tested on {test}")
    return rows.iloc[0]


def _dice_by_pair(pairs: pd.DataFrame, method: str, train: str, test: str, what: str = "retina pairs") -> pd.Series:
    """Dice of ``method`` per (seed, pair) on the generated test pairs of ``test``."""
    rows = pairs[(pairs.method == method) & (pairs.train_condition == train) & (pairs.test_set == "test")
                 & (pairs.test_condition == test)]
    if rows.empty:
        raise LookupError(f"no {what} for {method}, trained on {train}, tested on {test}")
    return rows.set_index(["seed", "pair"])["dice"]


def _paired(a: pd.Series, b: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The values of ``a`` and ``b`` on the (seed, pair) entries both have."""
    a, b = a.align(b, join="inner")
    return a.to_numpy(), b.to_numpy()


def _paired_dice(pairs: pd.DataFrame, method: str, train: str, tests: tuple[str, str]) -> tuple[np.ndarray, ...]:
    """Dice of ``method`` on the same test pairs (seed, pair) under two test conditions."""
    return _paired(*(_dice_by_pair(pairs, method, train, test) for test in tests))


def _mean_ci(row: pd.Series, name: str = "dice") -> str:
    return f"{row[name]:.3f} [{row[f'{name}_ci_low']:.3f}, {row[f'{name}_ci_high']:.3f}]"


def _difference(a: np.ndarray, b: np.ndarray) -> str:
    """Mean paired difference a - b with its bootstrap 95 % interval and the Wilcoxon p-value."""
    low, high = bootstrap_ci(a - b)
    return f"{(a - b).mean():.3f} [{low:.3f}, {high:.3f}], Wilcoxon p = {wilcoxon_p(a, b):.2g}, n = {len(a)}"


@titled("GradICON registers not-shifted pairs but fails on shifted ones (trained on not-shifted pairs)")
def claim_gradicon(retina: pd.DataFrame, pairs: pd.DataFrame) -> tuple[str, str, bool]:
    plain, shifted = _dice(retina, "gradicon", "none", "none"), _dice(retina, "gradicon", "none", "shift")
    a, b = _paired_dice(pairs, "gradicon", "none", ("none", "shift"))
    return (
        f"Dice(not shifted) > unregistered Dice, and Dice(shifted) < Dice(not shifted) - {GRADICON_DROP} "
        "(means over test pairs; [95 % bootstrap interval])",
        f"Dice not shifted {_mean_ci(plain)} (unregistered {plain.dice_before:.3f}); "
        f"shifted {_mean_ci(shifted)} (unregistered {shifted.dice_before:.3f}); drop {_difference(a, b)}",
        bool(plain.dice > plain.dice_before and shifted.dice < plain.dice - GRADICON_DROP))


@titled("CARL registers not-shifted and shifted pairs about equally well (trained on not-shifted pairs)")
def claim_carl(retina: pd.DataFrame, pairs: pd.DataFrame) -> tuple[str, str, bool]:
    plain, shifted = _dice(retina, "carl", "none", "none"), _dice(retina, "carl", "none", "shift")
    a, b = _paired_dice(pairs, "carl", "none", ("none", "shift"))
    return (
        f"|Dice(not shifted) - Dice(shifted)| <= {CARL_TOLERANCE} and both above their unregistered Dice "
        "(means over test pairs; [95 % bootstrap interval])",
        f"Dice not shifted {_mean_ci(plain)} (unregistered {plain.dice_before:.3f}); "
        f"shifted {_mean_ci(shifted)} (unregistered {shifted.dice_before:.3f}); difference {_difference(a, b)}",
        bool(abs(plain.dice - shifted.dice) <= CARL_TOLERANCE and plain.dice > plain.dice_before
             and shifted.dice > shifted.dice_before))


@titled("The loss basin of TwoStep{translation, network} is much wider than that of the translation alone "
       "(network: the retina model named by the preset's landscape.method, GradICON by default)")
def claim_landscape(landscape: pd.DataFrame) -> tuple[str, str, bool]:
    width = landscape.set_index("transform")["basin_width"]
    return (
        f"SSD against t, T(r) = r + [t, 0]; width of the basin around the minimum where the loss stays "
        f"below half depth (midpoint of its minimum and median; t in [0,1] units): "
        f"TwoStep >= {BASIN_RATIO} x translation",
        f"translation {width['translation']:.3f}, TwoStep {width['twostep']:.3f}",
        bool(width["twostep"] >= BASIN_RATIO * width["translation"]))


@titled("In 1-D, coordinate attention recovers A^-1 o B")
def claim_toy(toy: pd.DataFrame) -> tuple[str, str, bool]:
    error = float(toy["max_error"].iloc[0])
    return (f"largest error against (2/pi) arccos(x + 0.07 sin 3 pi x) away from the ends < {TOY_TOLERANCE}",
            f"max error {error:.4f}", error < TOY_TOLERANCE)


@titled("CARL is [W,U]-equivariant; the U-Net baselines are only [U,U]-equivariant")
def claim_equivariance(equivariance: pd.DataFrame) -> tuple[str, str, bool]:
    median = equivariance.set_index(["method", "case"])["median_error_vox"]
    carl = float(median[("carl", "[W,U]")])
    unets = [m for m in ("gradicon", "voxelmorph", "unet_only") if (m, "[W,U]") in median.index]
    parts = [f"carl [W,U] {carl:.3f}"] + [
        f"{m} [U,U] {median[(m, '[U,U]')]:.3f} / [W,U] {median[(m, '[W,U]')]:.3f}" for m in unets]
    unets_fail = all(median[(m, "[W,U]")] > UNET_WU_FACTOR * max(carl, median[(m, "[U,U]")]) for m in unets)
    return (
        f"CARL [W,U] median error < {CARL_WU_VOXELS} voxel; each U-Net's [W,U] median > {UNET_WU_FACTOR} x "
        f"max(CARL's [W,U], its own [U,U])",
        "; ".join(parts) + " (median error in voxels)",
        bool(carl < CARL_WU_VOXELS and unets and unets_fail))


def _versus_classical(lung_pairs: pd.DataFrame | None) -> str:
    """Each trained method's mTRE minus the classical method's on the same pairs (mm, interval, p)."""
    if lung_pairs is None or "classical" not in set(lung_pairs.method):
        return ""
    by_pair = lambda method: lung_pairs[lung_pairs.method == method].set_index(["seed", "pair"])["mtre_mm"]  # noqa: E731
    parts = [f"{method} {_difference(*_paired(by_pair(method), by_pair('classical')))}"
             for method in sorted(set(lung_pairs.method) - {"classical"})]
    return "; against the classical method (mTRE difference in mm, the same pairs): " + "; ".join(parts)


@titled("On lung, every method lowers the mTRE below the unregistered mTRE")
def claim_lung(lung: pd.DataFrame, copdgene: str | None, lung_pairs: pd.DataFrame | None = None) -> tuple[str, str, bool]:
    parts = [f"{row.method} {row.mtre_mm:.2f} mm [{row.mtre_mm_ci_low:.2f}, {row.mtre_mm_ci_high:.2f}]"
             for row in lung.itertuples()]
    before = float(lung["mtre_before_mm"].iloc[0])
    measured = f"unregistered {before:.2f} mm; " + ", ".join(parts) + _versus_classical(lung_pairs)
    if copdgene:
        measured += "; paper (COPDGene): " + ", ".join(f"{k} {v} mm" for k, v in PAPER_COPDGENE_MM.items())
    else:
        measured += " (synthetic motion with an exact map; COPDGene not configured, so no comparison with the paper's numbers)"
    return ("mTRE(method) < unregistered mTRE for every method", measured,
            bool((lung["mtre_mm"] < lung["mtre_before_mm"]).all()))


def _run_text(row: Any) -> str:
    """One run of the plateau table: its gain with the 95 % interval, its verdict and, where it is
    not at its plateau, the steps its curve says it needs."""
    text = (f"{row.method}/{row.train_condition}/seed{row.seed} {row.gain_last_quarter:+.3f}"
            f" [{row.gain_ci_low:+.3f}, {row.gain_ci_high:+.3f}] ({row.steps} steps): {row.plateau}")
    if row.plateau != "yes" and np.isfinite(row.steps_needed) and row.steps_needed > row.steps:
        text += f", its curve says ~{row.steps_needed:.0f} steps"
    elif row.plateau != "yes" and np.isinf(row.steps_needed):
        text += f", its curve gives no end within {tables.PLATEAU_HORIZON}x its steps"
    return text


@titled("No retina run is measurably still improving when it stops (the numbers compare methods, not budgets); "
        "the 3-D runs' distance to their plateau is stated")
def claim_plateau(plateau: pd.DataFrame) -> tuple[str, str, bool]:
    retina = plateau[plateau.experiment == "retina"]
    if retina.empty:
        raise LookupError("no retina learning curves")
    others = plateau[plateau.experiment != "retina"]
    counts = retina.plateau.value_counts()
    measured = (f"retina: {counts.get('yes', 0)} at plateau, {counts.get('undecided', 0)} undecided, "
                f"{counts.get('not yet', 0)} not yet; " + "; ".join(_run_text(row) for row in retina.itertuples()))
    if not others.empty:
        measured += " | 3-D (not judged by this claim): " + "; ".join(
            f"{row.experiment} {_run_text(row)}" for row in others.itertuples())
    bounds = ", ".join(f"{score} {bound}" for score, bound in tables.PLATEAU_BOUND.items())
    return (
        "over the last 25 % of each run's steps, the rise of the line fitted to its validation points "
        f"(held-out pairs, never the test pairs), with its 95 % interval, against the bound ({bounds}): "
        "'yes' if the interval lies below it, 'not yet' if above, 'undecided' if it straddles it; "
        "PASS when no retina run is 'not yet'",
        measured, bool((retina.plateau != "not yet").all()))


def _present(table: pd.DataFrame | None, name: str) -> pd.DataFrame:
    if table is None:
        raise LookupError(f"no table {name}")
    return table


def _io_rows(io_pairs: pd.DataFrame | None, method: str, test: str) -> pd.Series:
    """Dice of ``method (IO)`` per (seed, pair) on the generated test pairs of ``test`` (trained on
    not-shifted pairs)."""
    return _dice_by_pair(_present(io_pairs, "retina_io"), method, "none", test, "retina IO pairs")


@titled("Instance optimisation does not make a method worse (retina Dice, lung mTRE)")
def claim_io_no_worse(pairs: pd.DataFrame, io_pairs: pd.DataFrame | None, lung_pairs: pd.DataFrame | None,
                      lung_io_pairs: pd.DataFrame | None) -> tuple[str, str, bool]:
    parts, passed = [], True
    io_pairs, lung_io_pairs = _present(io_pairs, "retina_io"), _present(lung_io_pairs, "lung_io")
    chosen = io_pairs[(io_pairs.train_condition == "none") & (io_pairs.test_set == "test")]
    for (method, test), _ in chosen.groupby(["method", "test_condition"], sort=True):
        tuned, plain = _paired(_io_rows(io_pairs, method, test), _dice_by_pair(pairs, method, "none", test))
        low, high = bootstrap_ci(tuned - plain)
        passed &= high >= 0
        parts.append(f"{method} {test}: Dice {_difference(tuned, plain)}")
    for method, rows in lung_io_pairs.groupby("method", sort=True):
        plain_rows = _present(lung_pairs, "lung_pairs")
        plain_rows = plain_rows[plain_rows.method == method]
        tuned, plain = _paired(rows.set_index(["seed", "pair"])["mtre_mm"],
                               plain_rows.set_index(["seed", "pair"])["mtre_mm"])
        if not len(tuned):
            raise LookupError(f"no lung pairs of {method} to compare its IO with")
        low, high = bootstrap_ci(tuned - plain)
        passed &= low <= 0
        parts.append(f"{method} lung: mTRE (mm) {_difference(tuned, plain)}")
    if not parts:
        raise LookupError("no method evaluated with instance optimisation")
    return ("per method and test set, the paired difference IO - without IO over the IO pairs: its 95 % "
            "bootstrap interval reaches 0 or the better side (Dice: upper bound >= 0; mTRE: lower bound <= 0)",
            "; ".join(parts), bool(passed))


@titled("On shifted pairs GradICON with instance optimisation stays far below CARL (trained on not-shifted pairs)")
def claim_io_gradicon(pairs: pd.DataFrame, io_pairs: pd.DataFrame) -> tuple[str, str, bool]:
    carl, tuned = _paired(_dice_by_pair(pairs, "carl", "none", "shift"), _io_rows(io_pairs, "gradicon", "shift"))
    return (f"mean Dice of CARL - GradICON (IO) on the same shifted pairs > {GRADICON_DROP}",
            f"CARL - GradICON (IO): {_difference(carl, tuned)}",
            bool((carl - tuned).mean() > GRADICON_DROP))


@titled("CARL with instance optimisation registers not-shifted and shifted pairs about equally well")
def claim_io_carl(io_pairs: pd.DataFrame) -> tuple[str, str, bool]:
    plain, shifted = _paired(_io_rows(io_pairs, "carl", "none"), _io_rows(io_pairs, "carl", "shift"))
    return (f"|mean Dice(not shifted) - Dice(shifted)| <= {CARL_TOLERANCE} (CARL (IO), the same pairs)",
            f"not shifted {plain.mean():.3f}, shifted {shifted.mean():.3f}; difference {_difference(plain, shifted)}",
            bool(abs(plain.mean() - shifted.mean()) <= CARL_TOLERANCE))


def _brain_dice(pairs: pd.DataFrame, method: str, shift: float, io: bool = False) -> pd.Series:
    """Dice of ``method`` (with ``io``, of "method (IO)") per (seed, pair) at ``shift`` mm."""
    rows = pairs[(pairs.method == method) & (pairs.shift_mm == shift) & ((pairs.io_steps > 0) == io)]
    if rows.empty:
        raise LookupError(f"no brain pairs of {method}{' (IO)' if io else ''} at a shift of {shift:g} mm")
    return rows.set_index(["seed", "pair"])["dice"]


def _largest_shift(pairs: pd.DataFrame) -> float:
    if pairs.empty:
        raise LookupError("no brain pairs")
    return float(pairs.shift_mm.max())


@titled("Brain (Colin27 + AAL): CARL's Dice stays flat as the moving image is shifted (trained without shifts)")
def claim_brain_carl(pairs: pd.DataFrame) -> tuple[str, str, bool]:
    shifts = sorted(set(pairs.shift_mm))
    if len(shifts) < 2:
        raise LookupError("fewer than two brain shifts")
    base = _brain_dice(pairs, "carl", shifts[0])
    parts, passed = [], True
    for shift in shifts[1:]:
        shifted, plain = _paired(_brain_dice(pairs, "carl", shift), base)
        passed &= abs((shifted - plain).mean()) <= CARL_TOLERANCE
        parts.append(f"{shift:g} mm: {_difference(shifted, plain)}")
    before = pairs[(pairs.shift_mm == shifts[0]) & (pairs.method == "carl") & (pairs.io_steps == 0)].dice_before.mean()
    return (f"at every shift, |mean paired Dice difference to the unshifted pairs| <= {CARL_TOLERANCE}, "
            "[its 95 % bootstrap interval], and CARL above the unregistered Dice without shift",
            f"CARL {base.mean():.3f} at {shifts[0]:g} mm (unregistered {before:.3f}); Dice(shift) - Dice(0): "
            + "; ".join(parts), bool(passed and base.mean() > before))


@titled("Brain (Colin27 + AAL): GradICON's Dice falls as the moving image is shifted (trained without shifts)")
def claim_brain_gradicon(pairs: pd.DataFrame) -> tuple[str, str, bool]:
    low, high = float(pairs.shift_mm.min()), _largest_shift(pairs)
    near, far = _paired(_brain_dice(pairs, "gradicon", low), _brain_dice(pairs, "gradicon", high))
    return (f"mean Dice at the largest shift < mean Dice without shift - {GRADICON_DROP} (the same pairs)",
            f"GradICON {near.mean():.3f} at {low:g} mm, {far.mean():.3f} at {high:g} mm; drop {_difference(near, far)}",
            bool(far.mean() < near.mean() - GRADICON_DROP))


@titled("Brain (Colin27 + AAL): instance optimisation does not rescue GradICON at the largest shift")
def claim_brain_io_gradicon(pairs: pd.DataFrame) -> tuple[str, str, bool]:
    high = _largest_shift(pairs)
    carl, tuned = _paired(_brain_dice(pairs, "carl", high), _brain_dice(pairs, "gradicon", high, io=True))
    return (f"at the largest shift, mean Dice of CARL - GradICON (IO) on the same pairs > {GRADICON_DROP}",
            f"{high:g} mm: CARL {carl.mean():.3f}, GradICON (IO) {tuned.mean():.3f}; difference {_difference(carl, tuned)}",
            bool((carl - tuned).mean() > GRADICON_DROP))


@titled("Brain (Colin27 + AAL): no network is measurably still improving when it stops")
def claim_brain_plateau(plateau: pd.DataFrame) -> tuple[str, str, bool]:
    if plateau.empty:
        raise LookupError("no brain learning curves")
    counts = plateau.plateau.value_counts()
    return (f"as claim 7, on each brain run's validation Dice (bound {tables.PLATEAU_BOUND['val_dice']}): "
            "PASS when no run is 'not yet'",
            f"{counts.get('yes', 0)} at plateau, {counts.get('undecided', 0)} undecided, "
            f"{counts.get('not yet', 0)} not yet; " + "; ".join(_run_text(row) for row in plateau.itertuples()),
            bool((plateau.plateau != "not yet").all()))


def check_all(directory: str | Path, copdgene: str | None = None, brain: bool = False) -> list[Claim]:
    """The paper's six claims, the plateau check and the three claims on instance optimisation from
    the tables in ``directory``; with ``brain``, the brain's claims (:func:`brain_claims`) after them."""
    read = lambda name: tables.read(directory, name)  # noqa: E731
    retina, pairs, io_pairs = read("retina"), read("retina_pairs"), tables.read_if_written(directory, "retina_io")
    return [claim_gradicon(retina, pairs), claim_carl(retina, pairs), claim_landscape(read("landscape")),
            claim_toy(read("toy1d")), claim_equivariance(read("equivariance")),
            claim_lung(read("lung"), copdgene, tables.read_if_written(directory, "lung_pairs")),
            claim_plateau(read("plateau")),
            claim_io_no_worse(pairs, io_pairs, tables.read_if_written(directory, "lung_pairs"), tables.read_if_written(directory, "lung_io")),
            claim_io_gradicon(pairs, io_pairs), claim_io_carl(io_pairs)] + (brain_claims(directory) if brain else [])


def brain_claims(directory: str | Path) -> list[Claim]:
    """The brain shift sweep's claims (CARL flat, GradICON falling, IO no rescue) and its plateau
    check, from the brain tables in ``directory``."""
    pairs = tables.read(directory, "brain_pairs")
    return [claim_brain_carl(pairs), claim_brain_gradicon(pairs), claim_brain_io_gradicon(pairs),
            claim_brain_plateau(tables.read(directory, "brain_plateau"))]


def render(claims: list[Claim], title: str = "Claims of the CARL paper, checked on this run") -> str:
    """The claims as a Markdown table under ``title``, numbered from 1."""
    lines = [f"# {title}", "",
             "| # | claim | criterion | measured | result |", "|---|---|---|---|---|"]
    for number, claim in enumerate(claims, 1):
        lines.append(f"| {number} | {claim.text} | {claim.criterion} | {claim.measured} | "
                     f"{'PASS' if claim.passed else 'FAIL'} |")
    return "\n".join(lines) + "\n"


def table(claims: list[Claim]) -> pd.DataFrame:
    """The claims as rows (what the report renders on its landing page)."""
    return pd.DataFrame([{"claim": number, "text": claim.text, "criterion": claim.criterion,
                          "measured": claim.measured, "result": "PASS" if claim.passed else "FAIL"}
                         for number, claim in enumerate(claims, 1)])


def write(directory: str | Path, path: str | Path, copdgene: str | None = None,
          csv_path: str | Path | None = None, brain: bool = False) -> None:
    """Write ``claims.md`` (and, with ``csv_path``, the same rows as CSV) from the tables in
    ``directory`` (with ``brain``, the brain claims too)."""
    _write(check_all(directory, copdgene, brain), path, csv_path)


def write_brain(directory: str | Path, path: str | Path, csv_path: str | Path | None = None) -> None:
    """Write the brain's claims alone (:func:`brain_claims`) as ``brain_claims.md`` (and CSV): for a
    preset that runs the brain experiment on demand rather than with everything."""
    _write(brain_claims(directory), path, csv_path,
           title="Brain claims of the CARL paper (Colin27 + AAL shift sweep), checked on this run")


def _write(checked: list[Claim], path: str | Path, csv_path: str | Path | None, **title: str) -> None:
    write_text(path, render(checked, **title))
    if csv_path is not None:
        write_csv(csv_path, table(checked))
