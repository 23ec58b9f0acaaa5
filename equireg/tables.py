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

from equireg.files import write_text
from equireg.landscape import basin_width

FLOAT_FORMAT = "%.6g"


def _run_keys(path: str, pattern: str) -> dict[str, Any]:
    match = re.search(pattern, Path(path).as_posix())
    if not match:
        raise ValueError(f"{path}: result file name does not match {pattern}")
    return match.groupdict()


def _concat(paths: Iterable[str], pattern: str) -> pd.DataFrame:
    frames = [pd.read_csv(path).assign(**_run_keys(path, pattern)) for path in paths]
    return pd.concat(frames, ignore_index=True)


def retina_pairs(paths: Iterable[str]) -> pd.DataFrame:
    """Every retina test pair of every run, with its method, train condition and seed."""
    runs = _concat(paths, r"/(?P<method>[^/]+)/(?P<train_condition>[^/]+)/seed(?P<seed>\d+)\.csv$")
    keys = ["method", "train_condition", "seed", "test_set", "test_condition", "pair"]
    return runs[keys + ["dice_before", "dice", "folds_percent"]].sort_values(keys, ignore_index=True)


def retina(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean Dice (and spread over pairs and seeds), unregistered Dice and % folds per
    method x train condition x test set x test condition, from :func:`retina_pairs`."""
    keys = ["method", "train_condition", "test_set", "test_condition"]
    table = runs.groupby(keys, sort=True).agg(
        dice=("dice", "mean"), dice_std=("dice", "std"), dice_before=("dice_before", "mean"),
        folds_percent=("folds_percent", "mean"), pairs=("dice", "size")).reset_index()
    return table.fillna({"dice_std": 0.0})


def shift_sweep(paths: Iterable[str]) -> pd.DataFrame:
    """Mean Dice per method and shift magnitude."""
    runs = _concat(paths, r"/(?P<method>[^/]+)\.csv$")
    return runs.groupby(["method", "shift_px"], sort=True).agg(
        dice=("dice", "mean"), dice_before=("dice_before", "mean")).reset_index()


def equivariance(paths: Iterable[str]) -> pd.DataFrame:
    """[U,U] and [W,U] errors (voxels) per method."""
    rows = []
    for path in paths:
        method = Path(path).stem
        measured = json.loads(Path(path).read_text())
        for case in ("UU", "WU"):
            rows.append({"method": method, "case": f"[{case[0]},{case[1]}]",
                         "median_error_vox": measured[case]["median"], "p95_error_vox": measured[case]["p95"]})
    return pd.DataFrame(rows).sort_values(["method", "case"], ignore_index=True)


def lung(paths: Iterable[str]) -> pd.DataFrame:
    """mTRE (mm) before and after registration, and % folds, per method."""
    runs = _concat(paths, r"/(?P<method>[^/]+)/seed(?P<seed>\d+)\.csv$")
    return runs.groupby("method", sort=True).agg(
        mtre_mm=("mtre_mm", "mean"), mtre_before_mm=("mtre_before_mm", "mean"),
        folds_percent=("folds_percent", "mean"), pairs=("mtre_mm", "size")).reset_index()


def toy1d(path: str) -> pd.DataFrame:
    """Largest error of the 1-D toy against the analytic A^-1 o B, away from the ends."""
    curve = pd.read_csv(path)
    interior = curve[curve["interior"].astype(bool)]
    return pd.DataFrame([{"max_error": float(np.abs(interior["estimate"] - interior["analytic"]).max()),
                          "points": len(curve)}])


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


def write_table(frame: pd.DataFrame, directory: str | Path, name: str) -> None:
    """``name.csv``, ``name.md`` and ``name.tex`` in ``directory``."""
    directory = Path(directory)
    write_text(directory / f"{name}.csv", frame.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n"))
    write_text(directory / f"{name}.md", to_markdown(frame))
    write_text(directory / f"{name}.tex", to_latex(frame))


def write_all(inputs: Any, directory: str | Path) -> None:
    """Build every table from the workflow's named inputs."""
    pairs = retina_pairs(inputs.retina)
    write_table(pairs, directory, "retina_pairs")
    write_table(retina(pairs), directory, "retina")
    write_table(shift_sweep(inputs.shift_sweep), directory, "shift_sweep")
    write_table(equivariance(inputs.equivariance), directory, "equivariance")
    write_table(lung(inputs.lung), directory, "lung")
    write_table(toy1d(inputs.toy1d), directory, "toy1d")
    write_table(landscape(inputs.landscape), directory, "landscape")


def read(directory: str | Path, name: str) -> pd.DataFrame:
    """Read back a table written by :func:`write_table`."""
    return pd.read_csv(Path(directory) / f"{name}.csv")
