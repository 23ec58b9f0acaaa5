"""Rasterise vessel trees given as centreline samples with radii (2-D or 3-D)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from equireg.transforms import inside


def render_tubes(
    centres: np.ndarray,
    radii: np.ndarray,
    shape: Sequence[int],
    spacing: Sequence[float] | None = None,
    quantum: float = 0.5,
) -> np.ndarray:
    """Boolean mask of the union of balls ``|x - centres[k]| <= radii[k]``.

    ``centres`` is ``[K, D]`` in voxel coordinates (array-axis order), ``radii`` ``[K]`` in the units
    of ``spacing`` (voxels by default). Centres are snapped to voxels and radii rounded to multiples
    of ``quantum``: one Euclidean distance transform per distinct radius, cropped to the bounding
    box of its balls, is far faster than drawing balls one by one. A ball always covers its own
    voxel, so sub-voxel vessels stay one voxel wide instead of vanishing.
    """
    shape = tuple(int(n) for n in shape)
    dimension = len(shape)
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, dimension)
    radii = np.asarray(radii, dtype=np.float64).reshape(-1)
    if len(centres) != len(radii):
        raise ValueError(f"render_tubes: {len(centres)} centres but {len(radii)} radii")
    sampling = np.ones(dimension) if spacing is None else np.asarray(spacing, dtype=np.float64)
    index = np.rint(centres).astype(np.int64)
    kept = inside(index, shape)
    index, radii = index[kept], radii[kept]
    rounded = np.maximum(np.round(radii / quantum) * quantum, 0.0)

    mask = np.zeros(shape, dtype=bool)
    for radius in np.unique(rounded):
        points = index[rounded == radius]
        margin = np.ceil(radius / sampling).astype(np.int64) + 1
        low = np.maximum(points.min(0) - margin, 0)
        high = np.minimum(points.max(0) + margin + 1, shape)
        box = tuple(slice(a, b) for a, b in zip(low, high))
        seeds = np.ones(tuple(high - low), dtype=bool)
        seeds[tuple((points - low).T)] = False
        distance = ndimage.distance_transform_edt(seeds, sampling=sampling)
        mask[box] |= distance <= radius + 1e-9
    return mask
