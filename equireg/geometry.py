"""Physical space, the ITK way: where an image's voxels lie in mm, and grids placed in physical space.

A *geometry* is SimpleITK's (origin, spacing, direction) of an image, in ITK (x, y, z) order;
physical points are ``[..., D]`` in that order. Voxel indices are continuous and in array-axis order,
and [0, 1] coordinates follow :mod:`equireg.transforms`; the functions here convert between the three.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import SimpleITK as sitk
import torch

from equireg.transforms import voxel_grid, voxel_scale

Geometry = tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]


def geometry(image: sitk.Image | sitk.ImageFileReader) -> Geometry:
    """(origin, spacing, direction) of an image or a read header, the SimpleITK way (x, y, z order)."""
    return image.GetOrigin(), image.GetSpacing(), image.GetDirection()


def same_geometry(a: Geometry, b: Geometry, tolerance: float = 1e-4) -> bool:
    """Whether two geometries agree to ``tolerance`` (mm for origins, relative for spacings)."""
    (origin_a, spacing_a, direction_a), (origin_b, spacing_b, direction_b) = a, b
    return (np.allclose(origin_a, origin_b, rtol=0, atol=tolerance)
            and np.allclose(spacing_a, spacing_b, rtol=tolerance, atol=0)
            and np.allclose(direction_a, direction_b, rtol=0, atol=tolerance))


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    """Whether two images share size, origin, spacing and direction (to round-off)."""
    return a.GetSize() == b.GetSize() and same_geometry(geometry(a), geometry(b), 1e-6)


def _index_matrix(direction: Sequence[float], spacing: Sequence[float]) -> np.ndarray:
    """Physical offset (x, y, z) of one voxel step along each of x, y, z: direction times spacing."""
    dimension = len(spacing)
    return np.asarray(direction, dtype=np.float64).reshape(dimension, dimension) * np.asarray(spacing)


def index_to_physical(index: np.ndarray, origin: Sequence[float], spacing: Sequence[float],
                      direction: Sequence[float]) -> np.ndarray:
    """Continuous voxel indices ``[..., D]`` in array-axis order -> physical points ``[..., D]`` in
    ITK (x, y, z) order, for an image with the given geometry."""
    return index[..., ::-1] @ _index_matrix(direction, spacing).T + np.asarray(origin)


def physical_to_index(points: np.ndarray, origin: Sequence[float], spacing: Sequence[float],
                      direction: Sequence[float]) -> np.ndarray:
    """Physical points ``[..., D]`` (ITK x, y, z order) -> continuous voxel indices ``[..., D]`` in
    array-axis order: the inverse of :func:`index_to_physical`."""
    index_xyz = ((np.asarray(points, dtype=np.float64) - np.asarray(origin))
                 @ np.linalg.inv(_index_matrix(direction, spacing)).T)
    return np.ascontiguousarray(index_xyz[..., ::-1])


def voxel_points(shape: Sequence[int], geometry: Geometry) -> np.ndarray:
    """Physical position (ITK x, y, z) of every voxel of an image, ``[*shape, D]``."""
    return index_to_physical(np.moveaxis(voxel_grid(shape), 0, -1), *geometry)


def physical_to_coordinates(points: np.ndarray, geometry: Geometry, shape: Sequence[int]) -> torch.Tensor:
    """Physical points ``[*S, D]`` as a coordinate map ``[1, D, *S]`` (float32) in the [0, 1]
    coordinates of an image of ``shape`` and ``geometry``."""
    index = physical_to_index(points, *geometry) / voxel_scale(shape)
    return torch.from_numpy(index).float().movedim(-1, 0)[None]


def coordinates_to_physical(coordinate_map: torch.Tensor, geometry: Geometry, shape: Sequence[int]) -> np.ndarray:
    """A coordinate map ``[1, D, *S]`` in the [0, 1] coordinates of an image of ``shape`` and
    ``geometry`` as physical points ``[*S, D]`` (float64): the inverse of :func:`physical_to_coordinates`."""
    return index_to_physical(coordinate_map[0].movedim(0, -1).double().numpy() * voxel_scale(shape), *geometry)


def network_grid(fixed: sitk.Image, shape: Sequence[int]) -> sitk.Image:
    """An empty image of array shape ``shape`` covering ``fixed``'s physical extent without stretching it.

    The grid keeps the fixed image's direction and the ratios of its spacings (one scale factor for
    every axis, the smallest that fits the whole image); the image is centred and the rest is
    padding. When ``shape`` is the fixed image's own shape the grid is the fixed grid.
    """
    size_xyz = np.asarray(fixed.GetSize(), dtype=np.float64)
    shape_xyz = np.asarray(list(shape)[::-1], dtype=np.float64)
    scale = float(np.max((size_xyz - 1) / (shape_xyz - 1)))
    spacing = np.asarray(fixed.GetSpacing()) * scale
    direction = np.asarray(fixed.GetDirection(), dtype=np.float64).reshape(len(shape), len(shape))
    centre = np.asarray(fixed.GetOrigin()) + direction @ (np.asarray(fixed.GetSpacing()) * (size_xyz - 1) / 2)
    grid = sitk.Image([int(n) for n in shape_xyz], sitk.sitkFloat32)
    grid.SetSpacing([float(s) for s in spacing])
    grid.SetDirection(fixed.GetDirection())
    grid.SetOrigin([float(o) for o in centre - direction @ (spacing * (shape_xyz - 1) / 2)])
    return grid


def resample_to(image: sitk.Image, grid: sitk.Image) -> sitk.Image:
    """``image`` on ``grid`` in physical space (linear), padded with the image's minimum.

    When the grid is coarser, the image is first smoothed (Gaussian, sigma half the grid spacing)
    so that thin structures are averaged like the pooled training images, not aliased.
    """
    image = sitk.Cast(image, sitk.sitkFloat32)
    if same_grid(image, grid):
        return image
    coarser = np.asarray(grid.GetSpacing()) > np.asarray(image.GetSpacing()) * (1 + 1e-6)
    for axis in np.flatnonzero(coarser):  # one axis at a time: ITK takes no zero sigma
        image = sitk.RecursiveGaussian(image, 0.5 * grid.GetSpacing()[axis], False,
                                       sitk.RecursiveGaussianImageFilter.ZeroOrder, int(axis))
    low = float(sitk.GetArrayViewFromImage(image).min())
    return sitk.Resample(image, grid, sitk.Transform(), sitk.sitkLinear, low, sitk.sitkFloat32)
