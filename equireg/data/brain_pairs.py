"""Brain pairs with a known map: Colin27 warped twice by independent random warps, and the shift.

Each image of a pair is Colin27 under its own random smooth invertible warp (about 4 mm RMS
displacement inside the brain): ``moving = colin o phi1``, ``fixed = colin o phi2``, labels
and mask by the same maps. The map between them is exact: ``moving o psi = fixed`` for
``psi = phi1^-1 o phi2`` (``phi1^-1 = exp(-v1)``), stored as [0, 1] coordinates like
:class:`~equireg.data.lung.LungPair`'s. Warping the moving labels with ``psi`` gives the Dice
ceiling (what interpolation and the grid leave of a perfect registration).

The shift moves the moving image, its labels and mask together by whole voxels along one axis of
the canvas (padded for it, :func:`equireg.data.brain.canvas`), and the exact map with them, so the
ceiling is the same at every shift.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
from scipy import ndimage

from equireg.data.brain import Colin27
from equireg.data.lung import compose_displacements, displacement_coordinates, exponentiate
from equireg.data.random_warps import random_velocity
from equireg.transforms import voxel_grid

#: RMS displacement of each warp inside the brain: pairs then start near 0.6 AAL Dice (0.59 to 0.63
#: measured at 5.25 mm), well above the shifted pairs' 0.05 and below the ceiling
RMS_MM = 4.0
#: Gaussian smoothing of the velocity noise (mm): smooth over about two centimetres, like gyri, not voxels
SMOOTHNESS_MM = 9.0


@dataclass(frozen=True)
class BrainPair:
    """Moving and fixed T1 ([0, 1]), their AAL labels (int16) and brain masks (bool), and the exact
    map ``coordinates`` (``[3, *shape]``, [0, 1] coordinates of the moving grid: moving o psi = fixed)."""

    moving: np.ndarray
    fixed: np.ndarray
    moving_labels: np.ndarray
    fixed_labels: np.ndarray
    moving_mask: np.ndarray
    fixed_mask: np.ndarray
    coordinates: np.ndarray


def _warped(volume: Colin27, displacement: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image (linear), labels (nearest) and mask (linear, >= 0.5) of ``volume`` at ``x + u(x)``."""
    points = voxel_grid(volume.image.shape) + displacement
    image = ndimage.map_coordinates(volume.image, points, order=1, mode="constant", cval=0.0)
    labels = ndimage.map_coordinates(volume.labels, points, order=0, mode="constant", cval=0)
    mask = ndimage.map_coordinates(volume.mask.astype(np.float32), points, order=1, mode="constant") >= 0.5
    return image.astype(np.float32), labels.astype(np.int16), mask


def brain_pair(volume: Colin27, seed: int | Sequence[int], rms_mm: float = RMS_MM,
               smoothness_mm: float = SMOOTHNESS_MM) -> BrainPair:
    """One seeded pair of independently warped copies of ``volume`` with its exact map."""
    seeds = np.random.SeedSequence(seed if isinstance(seed, int) else list(seed)).spawn(2)
    shape = volume.image.shape
    velocities = [random_velocity(np.random.default_rng(s), shape, volume.spacing, smoothness_mm, rms_mm,
                                  volume.mask) for s in seeds]
    first, second = (exponentiate(v) for v in velocities)
    moving, fixed = _warped(volume, first), _warped(volume, second)
    # psi(x) = phi1^-1(phi2(x)): where the moving image shows what the fixed image shows at x
    exact = compose_displacements(exponentiate(-velocities[0]), second)
    return BrainPair(moving[0], fixed[0], moving[1], fixed[1], moving[2], fixed[2], displacement_coordinates(exact))


def shift_volume(array: np.ndarray, voxels: int, axis: int) -> np.ndarray:
    """``array`` moved by ``voxels`` (>= 0) towards the high end of array ``axis``, zero where it
    came from; an error if anything non-zero would leave the canvas (the canvas is padded for the
    largest shift, so only a wrong setting can crop the brain)."""
    if voxels < 0:
        raise ValueError(f"shift_volume: shifts go towards the padded end, got {voxels}")
    if voxels == 0:
        return array
    length = array.shape[axis]
    leaving = np.take(array, range(length - voxels, length), axis=axis)
    if leaving.any():
        raise ValueError(f"shift_volume: a shift of {voxels} voxels along axis {axis} moves content off the "
                         f"canvas ({length} voxels); pad the canvas by the largest shift")
    kept = np.take(array, range(length - voxels), axis=axis)
    zeros = np.zeros_like(np.take(array, range(voxels), axis=axis))
    return np.concatenate([zeros, kept], axis=axis)


def shift_pair(pair: BrainPair, voxels: int, axis: int) -> BrainPair:
    """``pair`` with its moving image, labels and mask shifted by ``voxels`` along array ``axis``; the
    exact map follows (the moving point of every fixed voxel moves by the same voxels)."""
    coordinates = pair.coordinates.copy()
    coordinates[axis] += np.float32(voxels / (pair.moving.shape[axis] - 1))
    return replace(pair, moving=shift_volume(pair.moving, voxels, axis),
                   moving_labels=shift_volume(pair.moving_labels, voxels, axis),
                   moving_mask=shift_volume(pair.moving_mask, voxels, axis), coordinates=coordinates)
