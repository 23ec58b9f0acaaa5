"""Training batches as pure functions of (seed, step), and byte-reproducible array files.

``batches(step) -> (moving, fixed)`` depends on nothing but its seed and ``step``, so a training
run resumed at step ``k`` sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from equireg.files import atomic_path

Arrays = dict[str, np.ndarray]


class PairBatches:
    """Batches from a fixed set of pairs (``[N, C, *spatial]`` arrays), epoch by epoch.

    Sample ``k`` of the stream (step ``k // batch_size``) is pair ``order(k // N)[k % N]``, where
    ``order(epoch)`` is a permutation drawn from ``(seed, epoch)``: every pair once per epoch.
    """

    def __init__(self, moving: np.ndarray, fixed: np.ndarray, batch_size: int, seed: int):
        if np.shape(moving) != np.shape(fixed):
            raise ValueError(f"PairBatches: moving {np.shape(moving)} and fixed {np.shape(fixed)} differ")
        if np.ndim(moving) < 3 or len(moving) == 0:
            raise ValueError(f"PairBatches: expected [N, C, *spatial] arrays, got shape {np.shape(moving)}")
        if batch_size < 1:
            raise ValueError(f"PairBatches: batch_size must be >= 1, got {batch_size}")
        self.moving = torch.as_tensor(np.asarray(moving, dtype=np.float32))
        self.fixed = torch.as_tensor(np.asarray(fixed, dtype=np.float32))
        self.batch_size, self.seed = int(batch_size), int(seed)

    def __len__(self) -> int:
        return len(self.moving)

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self))

    def indices(self, step: int) -> np.ndarray:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        samples = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
        epochs = samples // len(self)
        orders = {int(e): self.order(int(e)) for e in np.unique(epochs)}
        return np.array([orders[int(e)][s % len(self)] for s, e in zip(samples, epochs)])

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(self.indices(step))
        return self.moving[index], self.fixed[index]


# --- array files --------------------------------------------------------------------------------

_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed zip timestamps: np.savez stamps the current time


def save_arrays(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` as an ``.npz`` (readable by ``np.load``) atomically: a temporary file in the
    same folder, then a rename, so readers never see half a file. Same arrays -> same bytes."""
    with atomic_path(path) as temporary, zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue())


def load_arrays(path: str | Path) -> Arrays:
    """Read an ``.npz`` written by :func:`save_arrays` into memory."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"array file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        raise ValueError(f"{path}: not a readable .npz ({error})") from None

