"""Plumbing shared by the workflow's jobs: job setup and pair-set files (result files: :mod:`equireg.files`)."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from equireg.data.datasets import load_arrays, save_arrays

PathLike = str | os.PathLike


def setup_job(log: Sequence[str], threads: int) -> None:
    """Start of a workflow job: stderr (progress bars, warnings) to the rule's log, the rule's
    thread count for torch, and a non-interactive plotting backend."""
    import sys

    import matplotlib

    matplotlib.use("Agg")
    if log:
        sys.stderr = open(log[0], "w", buffering=1)
    torch.set_num_threads(max(1, threads))


def save_pairs(path: PathLike, **arrays: np.ndarray) -> None:
    """Write a pair set atomically and byte-reproducibly."""
    save_arrays(path, arrays)


def load_pairs(path: PathLike) -> dict[str, np.ndarray]:
    """Read a pair set written by :func:`save_pairs`, with a clear error for a broken file."""
    try:
        arrays = dict(load_arrays(path))
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{path}: not a readable pair set ({error})") from None
    missing = {"moving", "fixed"} - set(arrays)
    if missing:
        raise ValueError(f"{path}: pair set lacks {sorted(missing)}")
    return arrays

