"""Breathing-like synthetic motion on a real chest CT, with landmarks mapped by the exact map.

The CT (a breath-hold inhale scan) is the moving image; the fixed image is the CT warped by a
random smooth diffeomorphism ``phi`` (fixed = moving o phi), an exhale-like state:

- ``phi = exp(v)`` for a stationary velocity field ``v``, integrated by scaling and squaring, so it
  is invertible with a positive Jacobian; its inverse ``exp(-v)`` is computed the same way (it
  maps the moving landmarks back to the fixed ones to a small fraction of a voxel, tested).
- ``v`` is mostly cranio-caudal (array axis 0) and grows from the apex to the diaphragm: the
  diaphragm carries most of tidal breathing, the apex hardly moves. Its size ``amplitude_mm`` is
  drawn from [8, 16] mm per pair; with the apex at 10 % of it, a small front-back part (the chest
  wall) and a smooth random part (20 %), landmark displacements average several mm and reach about
  15 mm at the base, the range of the DIR-Lab 4DCT inhale/exhale pairs (mean 4 to 15 mm per case).
- Landmarks are high-contrast points of the fixed image inside its (eroded) lung mask: voxels
  brighter than their surroundings, which inside the lungs are vessels and their branchings, the
  points DIR-Lab's observers mark. They lie on voxel centres, where ``phi`` is known exactly, so
  ``moving_landmarks = phi(fixed_landmarks)`` carries no interpolation error.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from equireg.data.chest_ct import ChestCT
from equireg.data.lung import LungPair, displacement_coordinates, exponentiate
from equireg.data.random_warps import smooth_noise
from equireg.transforms import voxel_grid

AMPLITUDE_MM = (8.0, 16.0)
APEX_SHARE = 0.1


def cranio_caudal_profile(lung_mask: np.ndarray) -> np.ndarray:
    """Per slice of axis 0: 0 at the lungs' apex, 1 at their base (the diaphragm), clamped outside
    and smoothed so the motion has no kink."""
    rows = np.flatnonzero(lung_mask.any(axis=(1, 2)))
    position = np.clip((np.arange(lung_mask.shape[0]) - rows[0]) / max(rows[-1] - rows[0], 1), 0.0, 1.0)
    return ndimage.gaussian_filter1d(position ** 1.5, 1.0, mode="nearest")


def breathing_velocity(rng: np.random.Generator, lung_mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """A smooth velocity field ``[3, *shape]`` in voxels (see the module's docstring)."""
    shape = lung_mask.shape
    amplitude = rng.uniform(*AMPLITUDE_MM)
    profile = (APEX_SHARE + (1 - APEX_SHARE) * cranio_caudal_profile(lung_mask))[:, None, None]
    front_to_back = np.linspace(1.0, 0.0, shape[1])[None, :, None]
    velocity_mm = np.zeros((3, *shape))
    # fixed(x) = moving(x + u): u > 0 along axis 0 shows, at x, tissue from further down, so the
    # lungs look lifted and shorter in the fixed (exhaled) image
    velocity_mm[0] = amplitude * profile
    velocity_mm[1] = -0.25 * amplitude * profile * front_to_back  # the front chest wall sinks
    for axis in range(3):
        velocity_mm[axis] += smooth_noise(rng, shape, [n / 6 for n in shape], 0.2 * amplitude)
    return velocity_mm / np.asarray(spacing, dtype=np.float64).reshape(3, 1, 1, 1)


def vessel_landmarks(image_hu: np.ndarray, lung_mask: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` voxel centres ``[K, 3]`` (float64) inside the eroded lung mask: a seeded draw among
    the ``2 * count`` voxels that most exceed their surroundings (the image minus its Gaussian blur
    of 1.5 voxels). Strict local maxima would be too few: at the default's 5.5 mm voxels a vessel is
    about one voxel wide and a 3x3x3 window holds several."""
    image = np.asarray(image_hu, dtype=np.float64)
    contrast = image - ndimage.gaussian_filter(image, 1.5)
    candidates = np.argwhere((contrast > 0) & ndimage.binary_erosion(lung_mask))
    if len(candidates) < count:
        raise ValueError(f"vessel_landmarks: {len(candidates)} bright lung voxels for {count} landmarks; "
                         "use fewer landmarks or a larger size")
    strongest = candidates[np.argsort(-contrast[tuple(candidates.T)], kind="stable")[:2 * count]]
    chosen = strongest[np.sort(rng.choice(len(strongest), count, replace=False))]
    return chosen.astype(np.float64)


def _warp(array: np.ndarray, points: np.ndarray, fill: float) -> np.ndarray:
    return ndimage.map_coordinates(array.astype(np.float32), points, order=1, mode="constant", cval=fill)


def breathing_pair(ct: ChestCT, seed: int | Sequence[int], landmarks: int) -> LungPair:
    """The CT (moving) and its warped, exhale-like version (fixed) with exact landmarks and maps."""
    seeds = np.random.SeedSequence(seed if isinstance(seed, int) else list(seed)).spawn(2)
    velocity = breathing_velocity(np.random.default_rng(seeds[0]), ct.lung_mask, ct.spacing)
    forward, backward = exponentiate(velocity), exponentiate(-velocity)
    phi = voxel_grid(ct.image.shape) + forward
    fixed = _warp(ct.image, phi, fill=float(ct.image.min()))
    fixed_mask = _warp(ct.lung_mask, phi, fill=0.0) >= 0.5
    fixed_landmarks = vessel_landmarks(fixed, fixed_mask, landmarks, np.random.default_rng(seeds[1]))
    index = tuple(fixed_landmarks.astype(int).T)
    return LungPair(
        moving=ct.image.astype(np.float32), fixed=fixed,
        moving_mask=ct.lung_mask.astype(np.float32), fixed_mask=fixed_mask.astype(np.float32),
        moving_landmarks=fixed_landmarks + forward[(slice(None), *index)].T, fixed_landmarks=fixed_landmarks,
        spacing=ct.spacing, coordinates=displacement_coordinates(forward), inverse_coordinates=displacement_coordinates(backward),
    )


def augment_intensity(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A training image ([0, 1], zero outside ``mask``) with a random gamma in [0.8, 1.25] and
    Gaussian noise (sd 0.02) inside the lungs: scanners and doses differ, anatomy does not."""
    gamma = np.exp(rng.uniform(np.log(0.8), np.log(1.25)))
    noisy = np.clip(image, 0.0, 1.0) ** gamma + rng.normal(0.0, 0.02, image.shape)
    return (np.clip(noisy, 0.0, 1.0) * (mask > 0.5)).astype(np.float32)
