"""Atomic file output: nothing half-written survives a crash or a kill; result files (CSV, JSON)
written the same way everywhere, so reruns give the same bytes."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:  # only the writers' annotations need it; atomic_path's users need no pandas
    import pandas as pd


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name.split('.')[0]}.", suffix=suffix,
                                         dir=target.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text)


#: every number in a result file: six significant digits, so a rerun with the same seeds gives the same bytes
FLOAT_FORMAT = "%.6g"


def write_csv(path: str | os.PathLike, frame: pd.DataFrame, separator: str = ",") -> None:
    """Write ``frame`` as CSV (or TSV with ``separator="\\t"``) atomically, numbers as ``FLOAT_FORMAT``."""
    write_text(path, frame.to_csv(sep=separator, index=False, float_format=FLOAT_FORMAT, lineterminator="\n"))


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Write JSON atomically with sorted keys (byte-reproducible)."""
    write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")
