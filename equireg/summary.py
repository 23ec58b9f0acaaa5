"""The report's landing page: the claims and the leaderboards of one run as HTML tables.

Snakemake's report renders the workflow description (``workflow/report/workflow.rst``) as
reStructuredText, which would read the claims' ``|x|`` and ``*`` as markup; so the tables reach it
as an HTML fragment, written here from the run's CSV files.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from equireg import tables
from equireg.files import write_text

#: leaderboard tables shown under the claims, with their headings
LEADERBOARDS = {"leaderboard_retina": "Retina: Dice of models trained on not-shifted pairs [95 % interval], "
                                      "rank per test condition [95 % interval]; (IO): with instance optimisation",
                "leaderboard_lung": "Lung: mTRE in mm [95 % interval], lung-mask Dice and HD95, folds, SDlogJ, rank "
                                    "[95 % interval]; (IO): with instance optimisation",
                "leaderboard_brain": "Brain (Colin27 + AAL): mean Dice over labels [95 % interval] per shift of the "
                                     "moving image; HD95, folds, SDlogJ, endpoint error without shift; "
                                     "(IO): with instance optimisation"}


# Snakemake's landing page centres its content vertically in a scrolling box, which cuts off the
# top of a page taller than the window, and narrows the text to 32rem; scoped to this page.
STYLE = """<style>
div.h-screen.overflow-auto:has(.equireg-claims) { align-items: flex-start; }
div.prose:has(.equireg-claims) { max-width: 64rem; }
</style>"""


def _table(frame: pd.DataFrame, css_class: str) -> str:
    return frame.to_html(index=False, classes=["table", "table-sm", css_class], border=0, na_rep="", justify="left",
                         escape=True)


def fragment(claims: pd.DataFrame, leaderboards: dict[str, pd.DataFrame]) -> str:
    """The claims table followed by each leaderboard under its heading, methods by display name."""
    passed = int((claims["result"] == "PASS").sum())
    parts = [STYLE, f"<h3>Claims: {passed} of {len(claims)} PASS</h3>", _table(claims, "equireg-claims")]
    for name, frame in leaderboards.items():
        parts += [f"<h3>{html.escape(LEADERBOARDS.get(name, name))}</h3>",
                  _table(tables.for_readers(frame), f"equireg-{name}")]
    return "\n".join(parts) + "\n"


def _read_cells(csv: str | Path) -> pd.DataFrame:
    """A table's cells as written (``0.700`` stays ``0.700``, an empty cell stays empty)."""
    return pd.read_csv(csv, dtype=str, keep_default_na=False)


def write(claims_csv: str | Path, leaderboard_csvs: list[str | Path], path: str | Path) -> None:
    """Write the landing page fragment from ``claims.csv`` and the leaderboards' CSV files (each named
    ``<name>.csv`` for a name of ``LEADERBOARDS``; shown in that order)."""
    found = {Path(csv).stem: csv for csv in leaderboard_csvs}
    unknown = set(found) - set(LEADERBOARDS)
    if unknown:
        raise ValueError(f"not leaderboards: {sorted(unknown)} (known: {list(LEADERBOARDS)})")
    leaderboards = {name: _read_cells(found[name]) for name in LEADERBOARDS if name in found}
    write_text(path, fragment(_read_cells(claims_csv), leaderboards))
