"""Aggregation of per-run result files into tables, written as CSV, Markdown and LaTeX.

Every table is a pandas DataFrame with a fixed row order and numbers formatted to six significant
digits, so a rerun with the same seeds gives byte-identical files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
from scipy import optimize, stats

from equireg import metrics
from equireg.files import FLOAT_FORMAT, write_csv, write_text
from equireg.landscape import basin_width
from equireg.methods import display_name
from equireg.ranking import Metric, columns_read, rank_methods, rank_text
from equireg.uncertainty import bootstrap_ci


#: every table :func:`write_all` writes; the leaderboards first (the report's landing page shows them)
NAMES = ["leaderboard_retina", "leaderboard_lung", "ranking", "retina", "retina_pairs", "retina_io", "learning_curves",
         "plateau", "shift_sweep", "shift_sweep_io", "equivariance", "lung", "lung_pairs", "lung_io", "toy1d",
         "landscape"]

RETINA_KEYS = ["method", "train_condition", "seed", "test_set", "test_condition", "pair"]
#: the columns of a "method (IO)" row: instance optimisation's steps and learning rate
IO_KEYS = ["io_steps", "io_lr"]
#: what methods are ranked by (equireg.ranking); DSC30 on the 30 % of pairs hardest before registration
RETINA_RANKING = [Metric("dice", "dice", True), Metric("dsc30", "dice", True, hardest_by="dice_before"),
                  Metric("hd95", "hd95_px", False), Metric("sdlogj", "sdlogj", False)]
LUNG_RANKING = [Metric("mtre", "mtre_mm", False), Metric("dice_lung", "dice_lung", True),
                Metric("hd95_lung", "hd95_lung_mm", False), Metric("sdlogj", "sdlogj", False)]
#: per-pair measurements of a retina run; the endpoint errors and the ceiling exist for synthetic pairs
RETINA_VALUES = ["dice_before", "dice", "hd95_px", "folds_percent", "sdlogj", "epe_px", "epe_vessels_px",
                 "dice_ceiling"]


def _read_runs(paths: Iterable[str], keys: list[str]) -> pd.DataFrame:
    """Per-run result files stacked; each must name its run in the ``keys`` columns. No files
    (an evaluation the preset leaves out): an empty frame of those columns."""
    frames = []
    for path in paths:
        frame = pd.read_csv(path)
        missing = [key for key in keys if key not in frame.columns]
        if missing:
            raise ValueError(f"{path}: result file lacks the columns {missing} that say which run it is")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=keys)


def retina_pairs(paths: Iterable[str], io: bool = False) -> pd.DataFrame:
    """Every retina test pair of every run, with its method, train condition and seed (and, with
    ``io``, the instance optimisation of "method (IO)" runs)."""
    keys = RETINA_KEYS[:1] + (IO_KEYS if io else []) + RETINA_KEYS[1:]
    runs = _read_runs(paths, keys)
    values = [c for c in RETINA_VALUES if c in runs.columns]
    return runs[keys + values].sort_values(keys, ignore_index=True)


def _interval(values: pd.Series) -> pd.Series:
    low, high = bootstrap_ci(values.dropna().to_numpy()) if values.notna().any() else (np.nan, np.nan)
    return pd.Series({"low": low, "high": high})


def retina(runs: pd.DataFrame, extra_keys: tuple[str, ...] = ()) -> pd.DataFrame:
    """Per method x train condition x test set x test condition, from :func:`retina_pairs`: mean
    Dice with its spread over pairs and seeds and a bootstrap 95 % interval over pairs, DSC30 (mean
    of the lowest 30 % of the pairs' Dice), the unregistered Dice, HD95 (px), % folds, SDlogJ, and
    for synthetic pairs the endpoint errors (px, whole image and vessels, with the vessels'
    interval) and the Dice ceiling of the exact map. ``extra_keys`` (e.g. :data:`IO_KEYS`) group too."""
    keys = ["method", *extra_keys, "train_condition", "test_set", "test_condition"]
    columns = {"dice": ("dice", "mean"), "dice_std": ("dice", "std"), "dsc30": ("dice", metrics.dsc30),
               "dice_before": ("dice_before", "mean"), "folds_percent": ("folds_percent", "mean"),
               "pairs": ("dice", "size")}
    for name in ("hd95_px", "sdlogj", "epe_px", "epe_vessels_px", "dice_ceiling"):
        if name in runs.columns:
            columns[name] = (name, "mean")
    table = runs.groupby(keys, sort=True).agg(**columns).reset_index().fillna({"dice_std": 0.0})
    for column in ["dice"] + (["epe_vessels_px"] if "epe_vessels_px" in runs else []):
        table = _with_interval(runs, keys, column, table)
    return table


def _with_interval(runs: pd.DataFrame, keys: list[str], column: str, table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (grouped by ``keys``, sorted) with the bootstrap 95 % interval of ``column``'s mean."""
    if runs.empty:
        return table.assign(**{f"{column}_ci_low": [], f"{column}_ci_high": []})
    ci = runs.groupby(keys, sort=True)[column].apply(_interval).unstack().reset_index(drop=True)
    return table.assign(**{f"{column}_ci_low": ci["low"].to_numpy(), f"{column}_ci_high": ci["high"].to_numpy()})


def shift_sweep(paths: Iterable[str], io: bool = False) -> pd.DataFrame:
    """Mean Dice (with its 95 % interval over pairs) per method and shift magnitude (and, with
    ``io``, the instance optimisation of "method (IO)" runs)."""
    keys = ["method", *(IO_KEYS if io else []), "shift_px"]
    runs = _read_runs(paths, keys + ["pair", "dice", "dice_before"])
    table = runs.groupby(keys, sort=True).agg(dice=("dice", "mean"), dice_before=("dice_before", "mean")).reset_index()
    return _with_interval(runs, keys, "dice", table)


def equivariance(paths: Iterable[str]) -> pd.DataFrame:
    """[U,U] and [W,U] errors (voxels) per method."""
    rows = []
    for path in paths:
        measured = json.loads(Path(path).read_text())
        method = measured["method"]
        for case in ("UU", "WU"):
            rows.append({"method": method, "case": f"[{case[0]},{case[1]}]",
                         **{statistic: measured[case][statistic] for statistic in ("median_error_vox", "p95_error_vox")}})
    return pd.DataFrame(rows).sort_values(["method", "case"], ignore_index=True)


def lung_runs(paths: Iterable[str], io: bool = False) -> pd.DataFrame:
    """Every lung test pair of every run (with ``io``, of "method (IO)" runs), sorted."""
    keys = ["method", *(IO_KEYS if io else []), "seed", "pair"]
    runs = _read_runs(paths, keys + ["mtre_mm", "mtre_before_mm", "folds_percent"])
    return runs.sort_values(keys, ignore_index=True)


def lung(runs: pd.DataFrame) -> pd.DataFrame:
    """mTRE (mm, with its 95 % interval over pairs and seeds) before and after registration, and
    % folds, per method (and instance optimisation), from :func:`lung_runs`."""
    keys = ["method", *[key for key in IO_KEYS if key in runs]]
    extra = {name: (name, "mean") for name in ("dice_lung", "hd95_lung_mm", "sdlogj") if name in runs}
    table = runs.groupby(keys, sort=True).agg(
        mtre_mm=("mtre_mm", "mean"), mtre_before_mm=("mtre_before_mm", "mean"),
        folds_percent=("folds_percent", "mean"), pairs=("mtre_mm", "size"), **extra).reset_index()
    return _with_interval(runs, keys, "mtre_mm", table)


CURVE_KEYS = ["experiment", "method", "train_condition", "seed"]
#: a run is at its plateau when its validation score improves by at most this over its last quarter:
#: one point of Dice, or a tenth of a millimetre of mTRE (a tenth of the smallest lung voxel here)
PLATEAU_BOUND = {"val_dice": 0.01, "val_mtre_mm": 0.1}
#: the extrapolation of :func:`_steps_to_plateau` looks this many times the run's steps ahead, no further
PLATEAU_HORIZON = 100


def learning_curves(paths: Iterable[str]) -> pd.DataFrame:
    """Every validation point of every training run (the runs' ``curves/`` files)."""
    runs = _read_runs(paths, CURVE_KEYS + ["step"])
    return runs.sort_values(CURVE_KEYS + ["step"], ignore_index=True)


def _trend(steps: np.ndarray, scores: np.ndarray, span: float) -> tuple[float, float, float]:
    """The rise of the least-squares line through (steps, scores) over ``span`` steps, with its 95 %
    interval: the trend of a noisy curve, not the difference of two points.

    Dense validation points are not independent (the weights move little between two of them), so
    with eight or more points the interval is widened by the residuals' lag-1 autocorrelation ρ:
    standard error × sqrt((1 + ρ) / (1 - ρ)), t with n (1 - ρ) / (1 + ρ) - 2 degrees of freedom
    (the AR(1) effective sample size). Interval NaN below three points."""
    steps, scores = steps.astype(float), scores.astype(float)
    if len(steps) < 2:
        return float("nan"), float("nan"), float("nan")
    if len(steps) < 3:
        return float(np.polyfit(steps, scores, 1)[0] * span), float("nan"), float("nan")
    fit = stats.linregress(steps, scores)
    rho = 0.0
    if len(steps) >= 8:
        residuals = scores - (fit.intercept + fit.slope * steps)
        denominator = float(np.sum(residuals ** 2))
        if denominator > 0:
            rho = float(np.clip(np.sum(residuals[1:] * residuals[:-1]) / denominator, 0.0, 0.9))
    effective = len(steps) * (1 - rho) / (1 + rho)
    half = stats.t.ppf(0.975, max(1.0, effective - 2)) * fit.stderr * np.sqrt((1 + rho) / (1 - rho))
    return float(fit.slope * span), float((fit.slope - half) * span), float((fit.slope + half) * span)


def _steps_to_plateau(steps: np.ndarray, gains: np.ndarray, bound: float) -> float:
    """How many steps in all the curve says a run needs: a saturating exponential
    c - a exp(-t / τ) fitted to the second half of the curve (``gains``: the score, oriented so that
    up is better), and the least total T >= the run's steps at which its rise over [0.75 T, T] is
    <= ``bound``. inf beyond ``PLATEAU_HORIZON`` times the run's steps; NaN when the fit fails."""
    total = float(steps[-1])
    late = steps >= total / 2
    t, y = steps[late].astype(float), gains[late].astype(float)
    if len(t) < 5:
        return float("nan")

    def curve(t: np.ndarray, c: float, a: float, tau: float) -> np.ndarray:
        return c - a * np.exp(-t / tau)

    start = (y[-1], max(y[-1] - y[0], 1e-6) * np.exp(t[0] / total), total / 2)
    try:
        (_, a, tau), _ = optimize.curve_fit(curve, t, y, p0=start, maxfev=20000,
                                            bounds=([-np.inf, 0.0, total / 50], [np.inf, np.inf, PLATEAU_HORIZON * total]))
    except (RuntimeError, ValueError):
        return float("nan")
    candidates = np.geomspace(total, PLATEAU_HORIZON * total, 2000)
    rise = a * (np.exp(-0.75 * candidates / tau) - np.exp(-candidates / tau))
    reached = candidates[rise <= bound]
    return float(np.ceil(reached[0])) if len(reached) else float("inf")


def plateau(curves: pd.DataFrame) -> pd.DataFrame:
    """Per training run: its steps, final validation score and its gain over its last 25 % of steps
    (the rise of the line fitted to the validation points from the last one at or before 75 % of the
    steps to the end; for mTRE its fall) with its 95 % interval (:func:`_trend`), judged against
    ``PLATEAU_BOUND``: "yes" when the whole interval lies at or below the bound, "not yet" when it
    lies above, "undecided" when it straddles it. Runs not at their plateau get ``steps_needed``,
    the total steps their curve says they need (:func:`_steps_to_plateau`)."""
    rows = []
    for keys, run in curves.groupby(CURVE_KEYS, sort=True):
        run = run.sort_values("step")
        score = "val_dice" if run.get("val_dice", pd.Series(dtype=float)).notna().any() else "val_mtre_mm"
        steps = int(run["step"].iloc[-1])
        earlier = run[run["step"] <= 0.75 * steps]
        first = earlier["step"].iloc[-1] if not earlier.empty else run["step"].iloc[0]
        quarter = run[run["step"] >= first]
        direction = 1.0 if score == "val_dice" else -1.0  # mTRE improves downwards
        gain, low, high = _trend(quarter["step"].to_numpy(), direction * quarter[score].to_numpy(), 0.25 * steps)
        bound = PLATEAU_BOUND[score]
        verdict = "yes" if high <= bound else "not yet" if low > bound else "undecided"
        needed = (np.nan if verdict == "yes" else
                  _steps_to_plateau(run["step"].to_numpy(), direction * run[score].to_numpy(), bound))
        rows.append({**dict(zip(CURVE_KEYS, keys)), "steps": steps, "score": score,
                     "final": float(run[score].iloc[-1]), "gain_last_quarter": gain,
                     "gain_ci_low": low, "gain_ci_high": high, "points": len(quarter), "bound": bound,
                     "plateau": verdict, "steps_needed": needed})
    return pd.DataFrame(rows)


def _with_ci(mean: float, low: float, high: float, digits: int) -> str:
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _per_pair(runs: pd.DataFrame, metrics_: list[Metric]) -> pd.DataFrame:
    """One row per method and pair: its values averaged over seeds (the cases that ranks compare)."""
    return runs.groupby(["method", "pair"], as_index=False, sort=True)[columns_read(metrics_)].mean()


def ranking(pairs: pd.DataFrame, lung_runs_: pd.DataFrame) -> pd.DataFrame:
    """Ranks of the methods with their 95 % bootstrap intervals (:mod:`equireg.ranking`): retina per
    test condition, on the generated test pairs of models trained on not-shifted pairs (Dice,
    DSC30, HD95, SDlogJ), and lung (mTRE, lung-mask Dice and HD95, SDlogJ); "method (IO)"
    variants, evaluated on fewer pairs, are not ranked."""
    parts = []
    chosen = pairs[(pairs.test_set == "test") & (pairs.train_condition == "none")]
    for condition, group in chosen.groupby("test_condition", sort=True):
        if group.method.nunique() > 1:
            ranked = rank_methods(_per_pair(group, RETINA_RANKING), RETINA_RANKING)
            parts.append(ranked.assign(experiment="retina", test_condition=condition))
    if lung_runs_.method.nunique() > 1:
        ranked = rank_methods(_per_pair(lung_runs_, LUNG_RANKING), LUNG_RANKING)
        parts.append(ranked.assign(experiment="lung", test_condition="none"))
    if not parts:
        return pd.DataFrame(columns=["experiment", "test_condition", "method", "rank"])
    table = pd.concat(parts, ignore_index=True)
    first = ["experiment", "test_condition", "method"]
    return table[first + [c for c in table.columns if c not in first]]


def _rank_cell(ranks: pd.DataFrame, experiment: str, condition: str, method: str) -> str:
    row = ranks[(ranks.experiment == experiment) & (ranks.test_condition == condition) & (ranks.method == method)]
    return rank_text(row.iloc[0]) if not row.empty else ""


def _retina_entry(method: str, group: pd.DataFrame, conditions: list[str]) -> dict[str, str]:
    """Dice [95 % interval] per test condition, the vessel endpoint error and the number of pairs."""
    group = group.set_index("test_condition")
    entry = {"method": method}
    for c in conditions:
        if c in group.index:
            row = group.loc[c]
            entry[f"dice_{c}"] = _with_ci(row.dice, row.dice_ci_low, row.dice_ci_high, 3)
    if "epe_vessels_px" in group and "none" in group.index:
        entry["epe_vessels_px_none"] = f"{group.loc['none', 'epe_vessels_px']:.2f}"
    entry["pairs"] = str(int(group.pairs.iloc[0]))
    return entry


def leaderboard_retina(retina: pd.DataFrame, ranks: pd.DataFrame, io: pd.DataFrame | None = None) -> pd.DataFrame:
    """Method x test condition: mean Dice [95 % interval] on the generated test pairs, models
    trained on not-shifted pairs, with the unregistered pairs first; vessel endpoint error, the
    rank [95 % interval] per test condition (``ranks``: :func:`ranking`) and the number of test
    pairs beside. Then "method (IO)" rows from ``io`` (:func:`retina` of :func:`retina_pairs` with
    ``io``), marked by their instance optimisation steps."""
    rows = retina[(retina.test_set == "test") & (retina.train_condition == "none")]
    conditions = [c for c in ("none", "shift", "shift_scale") if c in set(rows.test_condition)]
    board = []
    first = rows[rows.method == rows.method.iloc[0]].set_index("test_condition") if not rows.empty else None
    if first is not None:
        board.append({"method": "unregistered", **{f"dice_{c}": f"{first.loc[c, 'dice_before']:.3f}" for c in conditions}})
    for method, group in rows.groupby("method", sort=True):
        entry = _retina_entry(method, group, conditions)
        board.append({**entry, **{f"rank_{c}": _rank_cell(ranks, "retina", c, method) for c in conditions}})
    if io is not None:
        io_rows = io[(io.test_set == "test") & (io.train_condition == "none")]
        for (method, steps), group in io_rows.groupby(["method", "io_steps"], sort=True):
            board.append({**_retina_entry(method, group, conditions), "io_steps": str(int(steps))})
    columns = ["method", *[f"dice_{c}" for c in conditions], "epe_vessels_px_none",
               *[f"rank_{c}" for c in conditions], "pairs", "io_steps"]
    board = pd.DataFrame(board)
    return board.reindex(columns=[c for c in columns if c in board]).fillna("")


def leaderboard_lung(lung: pd.DataFrame, ranks: pd.DataFrame, io: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per lung method: mTRE in mm [95 % interval], lung-mask Dice and HD95 (mm), % folds, SDlogJ,
    the rank [95 % interval] (``ranks``: :func:`ranking`) and the number of test pairs; then
    "method (IO)" rows from ``io`` (:func:`lung` of :func:`lung_runs` with ``io``)."""
    board = [{"method": "unregistered", "mtre_mm": f"{lung.mtre_before_mm.iloc[0]:.2f}"}] if not lung.empty else []
    for table, optimized in [(lung, False)] + ([(io, True)] if io is not None else []):
        for row in table.itertuples(index=False):
            entry = {"method": row.method, "mtre_mm": _with_ci(row.mtre_mm, row.mtre_mm_ci_low, row.mtre_mm_ci_high, 2)}
            for name, digits in (("dice_lung", 3), ("hd95_lung_mm", 2), ("folds_percent", 3), ("sdlogj", 3)):
                if hasattr(row, name):
                    entry[name] = f"{getattr(row, name):.{digits}f}"
            if optimized:
                entry["io_steps"] = str(int(row.io_steps))
            else:
                entry["rank"] = _rank_cell(ranks, "lung", "none", row.method)
            entry["pairs"] = str(int(row.pairs))
            board.append(entry)
    columns = ["method", "mtre_mm", "dice_lung", "hd95_lung_mm", "folds_percent", "sdlogj", "rank", "pairs",
               "io_steps"]
    board = pd.DataFrame(board)
    return board.reindex(columns=[c for c in columns if c in board]).fillna("")


def for_readers(board: pd.DataFrame) -> pd.DataFrame:
    """A leaderboard as readers see it (Markdown, LaTeX, the report): methods by their display names,
    as in the README and the figures, "(IO)" after a method evaluated with instance optimisation.
    Its CSV keeps the method ids that the other tables use, and the IO steps in their own column."""
    names = board.method.map(display_name)
    if "io_steps" in board:
        names = names.where(board.io_steps == "", names + " (IO)")
    return board.assign(method=names)


def toy1d(path: str) -> pd.DataFrame:
    """Largest error of the 1-D toy against the analytic A^-1 o B, away from the ends."""
    from equireg.toy1d import toy_error

    curve = pd.read_csv(path)
    _, max_error = toy_error(curve["estimate"], curve["analytic"], curve["interior"])
    return pd.DataFrame([{"max_error": max_error, "points": len(curve)}])


def landscape(path: str) -> pd.DataFrame:
    """Per curve: the lowest loss, where it lies, its median, and the width of the half-depth basin."""
    curve = pd.read_csv(path)
    rows = []
    for name in ("translation", "twostep"):
        loss = curve[f"loss_{name}"].to_numpy()
        rows.append({"transform": name, "min_loss": float(loss.min()),
                     "argmin_t": float(curve["t"].iloc[int(loss.argmin())]),
                     "median_loss": float(np.median(loss)),
                     "basin_width": basin_width(curve["t"].to_numpy(), loss)})
    return pd.DataFrame(rows)


# --- writers ------------------------------------------------------------------------------------

def _cells(frame: pd.DataFrame) -> list[list[str]]:
    def cell(value: Any) -> str:
        return FLOAT_FORMAT % value if isinstance(value, (float, np.floating)) else str(value)
    return [[cell(v) for v in row] for row in frame.itertuples(index=False)]


def to_markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(row) + " |" for row in _cells(frame)]
    return "\n".join([header, rule, *body]) + "\n"


def to_latex(frame: pd.DataFrame) -> str:
    def escape(text: str) -> str:
        return re.sub(r"([_%&#$])", r"\\\1", text)
    lines = [r"\begin{tabular}{" + "l" * len(frame.columns) + "}", r"\toprule",
             " & ".join(escape(c) for c in frame.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(escape(c) for c in row) + r" \\" for row in _cells(frame)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_table(frame: pd.DataFrame, directory: str | Path, name: str, shown: pd.DataFrame | None = None) -> None:
    """``name.csv`` in ``directory``, and ``name.md`` and ``name.tex`` of ``shown`` (default: ``frame``)."""
    directory = Path(directory)
    shown = frame if shown is None else shown
    write_csv(directory / f"{name}.csv", frame)
    write_text(directory / f"{name}.md", to_markdown(shown))
    write_text(directory / f"{name}.tex", to_latex(shown))


def _write_leaderboard(board: pd.DataFrame, directory: str | Path, name: str) -> None:
    write_table(board, directory, name, shown=for_readers(board))


def write_all(inputs: Any, directory: str | Path) -> None:
    """Build every table from the workflow's named inputs."""
    pairs = retina_pairs(inputs.retina)
    write_table(pairs, directory, "retina_pairs")
    retina_table = retina(pairs)
    write_table(retina_table, directory, "retina")
    io_pairs = retina_pairs(inputs.retina_io, io=True)
    write_table(io_pairs, directory, "retina_io")
    lung_pairs, lung_io_pairs = lung_runs(inputs.lung), lung_runs(inputs.lung_io, io=True)
    ranks = ranking(pairs, lung_pairs)
    write_table(ranks, directory, "ranking")
    _write_leaderboard(leaderboard_retina(retina_table, ranks, retina(io_pairs, tuple(IO_KEYS))), directory,
                       "leaderboard_retina")
    curves = learning_curves(inputs.curves)
    write_table(curves, directory, "learning_curves")
    write_table(plateau(curves), directory, "plateau")
    write_table(shift_sweep(inputs.shift_sweep), directory, "shift_sweep")
    write_table(shift_sweep(inputs.shift_sweep_io, io=True), directory, "shift_sweep_io")
    write_table(equivariance(inputs.equivariance), directory, "equivariance")
    lung_table = lung(lung_pairs)
    write_table(lung_table, directory, "lung")
    write_table(lung_pairs, directory, "lung_pairs")
    write_table(lung_io_pairs, directory, "lung_io")
    _write_leaderboard(leaderboard_lung(lung_table, ranks, lung(lung_io_pairs)), directory, "leaderboard_lung")
    write_table(toy1d(inputs.toy1d), directory, "toy1d")
    write_table(landscape(inputs.landscape), directory, "landscape")


def read(directory: str | Path, name: str) -> pd.DataFrame:
    """Read back a table written by :func:`write_table`."""
    return pd.read_csv(Path(directory) / f"{name}.csv")


def read_if_written(directory: str | Path, name: str) -> pd.DataFrame | None:
    """:func:`read`, or ``None`` where the run did not write that table (an older run, a test)."""
    return read(directory, name) if (Path(directory) / f"{name}.csv").exists() else None


# --- brain: the shift sweep on Colin27 + AAL --------------------------------------------------------

#: the brain experiment's tables (its own rule writes them: a preset may leave the experiment out)
BRAIN_NAMES = ["leaderboard_brain", "brain", "brain_pairs", "brain_curves", "brain_plateau"]
#: the columns that say which run, shift and pair a brain row is; io_steps 0 marks a run without IO
BRAIN_KEYS = ["method", *IO_KEYS, "seed", "axis", "shift_vox", "shift_mm", "pair"]
#: per-pair measurements of a brain run (equireg.experiments.brain_evaluation)
BRAIN_VALUES = ["dice_before", "dice", "dice_ceiling", "hd95_mm", "folds_percent", "sdlogj", "epe_mm", "labels"]


def _without_io(runs: pd.DataFrame) -> pd.DataFrame:
    """Rows of runs without instance optimisation marked as 0 IO steps, so that one table holds both."""
    return runs.assign(**{key: runs[key] if key in runs else 0 for key in IO_KEYS})


def brain_pairs(paths: Iterable[str], io_paths: Iterable[str] = ()) -> pd.DataFrame:
    """Every brain test pair at every shift of every run, "method (IO)" runs included (their
    ``io_steps`` > 0), sorted."""
    plain = _read_runs(paths, ["method", "seed", "axis", "shift_vox", "shift_mm", "pair", "dice"])
    optimized = _read_runs(io_paths, BRAIN_KEYS + ["dice"])
    runs = pd.concat([frame for frame in (_without_io(plain), optimized) if not frame.empty], ignore_index=True)
    if runs.empty:
        return pd.DataFrame(columns=BRAIN_KEYS + BRAIN_VALUES)
    return runs[BRAIN_KEYS + [c for c in BRAIN_VALUES if c in runs]].sort_values(BRAIN_KEYS, ignore_index=True)


def brain(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per method (and instance optimisation), axis and shift, from :func:`brain_pairs`: mean AAL Dice
    with its bootstrap 95 % interval over pairs and seeds, the unregistered Dice and the ceiling of
    the exact map, HD95 (mm), % folds, SDlogJ, endpoint error (mm) and the number of pairs."""
    keys = ["method", *IO_KEYS, "axis", "shift_vox", "shift_mm"]
    columns = {name: (name, "mean") for name in BRAIN_VALUES if name in pairs and name != "labels"}
    table = pairs.groupby(keys, sort=True).agg(**columns, pairs=("dice", "size")).reset_index()
    return _with_interval(pairs, keys, "dice", table)


def leaderboard_brain(brain_table: pd.DataFrame) -> pd.DataFrame:
    """Per brain method, "method (IO)" rows after the others: mean AAL Dice [95 % interval] at each
    shift (columns ``dice_<mm>mm``), then HD95 (mm), % folds, SDlogJ and endpoint error (mm) without
    shift, and the number of test pairs; the unregistered pairs first, the exact map's ceiling last.
    ``brain_table``: :func:`brain`."""
    if brain_table.empty:
        return pd.DataFrame(columns=["method"])
    shifts = sorted(set(brain_table.shift_mm))
    first = brain_table[(brain_table.method == brain_table.method.iloc[0]) & (brain_table.io_steps == 0)]
    first = first.set_index("shift_mm")
    board = [{"method": "unregistered", **{f"dice_{mm:g}mm": f"{first.loc[mm, 'dice_before']:.3f}" for mm in shifts}}]
    for (steps, method), group in brain_table.groupby(["io_steps", "method"], sort=True):
        group = group.set_index("shift_mm")
        entry = {"method": method, **{f"dice_{mm:g}mm": _with_ci(row.dice, row.dice_ci_low, row.dice_ci_high, 3)
                                      for mm, row in group.iterrows()}}
        unshifted = group.loc[shifts[0]]
        for name, digits in (("hd95_mm", 2), ("folds_percent", 3), ("sdlogj", 3), ("epe_mm", 2)):
            entry[name] = f"{unshifted[name]:.{digits}f}"
        entry["pairs"] = str(int(unshifted.pairs))
        entry["io_steps"] = str(int(steps)) if steps else ""
        board.append(entry)
    board.append({"method": "exact map (ceiling)",
                  **{f"dice_{mm:g}mm": f"{first.loc[mm, 'dice_ceiling']:.3f}" for mm in shifts}})
    columns = ["method", *[f"dice_{mm:g}mm" for mm in shifts], "hd95_mm", "folds_percent", "sdlogj", "epe_mm",
               "pairs", "io_steps"]
    return pd.DataFrame(board).reindex(columns=columns).fillna("")


def brain_labels(paths: Iterable[str], io_paths: Iterable[str] = ()) -> pd.DataFrame:
    """Every label's Dice on every brain test pair at every shift of every run, sorted."""
    keys = [*BRAIN_KEYS, "label"]
    plain = _read_runs(paths, ["method", "seed", "axis", "shift_vox", "pair", "label", "dice"])
    optimized = _read_runs(io_paths, keys + ["dice"])
    runs = pd.concat([frame for frame in (_without_io(plain), optimized) if not frame.empty], ignore_index=True)
    if runs.empty:
        return pd.DataFrame(columns=keys + ["name", "dice"])
    return runs[keys + ["name", "dice"]].sort_values(keys, ignore_index=True)


def write_brain(inputs: Any, directory: str | Path) -> None:
    """The brain tables (:data:`BRAIN_NAMES`, and ``brain_labels.csv``) from the workflow's named
    inputs: the evaluations (``brain``, ``brain_io``, their ``*_labels``) and the learning ``curves``."""
    pairs = brain_pairs(inputs.brain, inputs.brain_io)
    table = brain(pairs)
    _write_leaderboard(leaderboard_brain(table), directory, "leaderboard_brain")
    write_table(table, directory, "brain")
    write_table(pairs, directory, "brain_pairs")
    curves = learning_curves(inputs.curves)
    write_table(curves, directory, "brain_curves")
    write_table(plateau(curves), directory, "brain_plateau")
    # one row per label, pair, shift and run: a CSV to analyse, too long to read as Markdown
    write_csv(Path(directory) / "brain_labels.csv", brain_labels(inputs.brain_labels, inputs.brain_io_labels))
