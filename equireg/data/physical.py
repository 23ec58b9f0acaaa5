"""Resampling a volume onto another grid in physical space (by origin, spacing and direction).

Geometries are SimpleITK's (origin, spacing, direction) in ITK (x, y, z) order, as in
:mod:`equireg.geometry`; arrays are in array-axis order ``[z, y, x]``. A target voxel takes the
source value at the same physical point, whatever the two grids' index layouts.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from equireg.geometry import Geometry, physical_to_index, voxel_points

#: array axis 0 runs head to feet, 1 front to back, 2 right to left (LPS patient axes, z reversed):
#: the lung phantom's layout, so the breathing motion is along axis 0 for phantom and CT alike
HEAD_TO_FEET = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


def resample_physical(array: np.ndarray, source: Geometry, shape: Sequence[int], target: Geometry,
                      order: int = 1, fill: float = 0.0) -> np.ndarray:
    """``array`` (on ``source``) sampled at every voxel of a ``shape`` grid with geometry ``target``.

    Where the target spacing is coarser than the source's, the source is Gaussian-smoothed first
    (sigma = (ratio - 1) / 2 source voxels per axis) so that thin structures average rather than
    alias. Points outside the source get ``fill``.
    """
    array = np.asarray(array, dtype=np.float32)
    # a target voxel spans this many source voxels along each source axis (array order)
    ratios = [min(target[1]) / s for s in source[1][::-1]]
    if order > 0 and any(r > 1 for r in ratios):
        array = ndimage.gaussian_filter(array, [max(r - 1, 0) / 2 for r in ratios], mode="nearest")
    index = physical_to_index(voxel_points(shape, target), *source)
    return ndimage.map_coordinates(array, np.moveaxis(index, -1, 0), order=order, mode="constant",
                                   cval=fill).astype(np.float32)


def cube_around(points: np.ndarray, size: int, margin_mm: float,
                direction: Sequence[float] = HEAD_TO_FEET) -> Geometry:
    """The geometry of an isotropic ``size``^3 grid (axes along ``direction``) whose cube holds every
    physical point of ``points`` ``[K, 3]`` plus ``margin_mm`` on each side, centred on their box."""
    low, high = points.min(axis=0) - margin_mm, points.max(axis=0) + margin_mm
    spacing = float((high - low).max()) / (size - 1)
    axes = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    # voxel 0 lies half the cube's side before the centre along every grid axis
    origin = (low + high) / 2 - axes @ np.full(3, spacing * (size - 1) / 2)
    return tuple(float(v) for v in origin), (spacing,) * 3, tuple(float(v) for v in direction)
