"""Lung CT: the CARL/GradICON preprocessing and an offline breathing benchmark (a 3-D phantom).

Arrays are ``[z, y, x]`` (array axis 0 runs head to feet, 1 front to back, 2 right to left in the
phantom); spacings are millimetres per array axis; points are zero-based voxel indices in array-axis
order. Resampling keeps the equireg/ICON grid convention (first and last voxel centres fixed, like
``align_corners=True``), so a point keeps its [0, 1] coordinates and TRE in mm stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from equireg.data.random_warps import smooth_noise
from equireg.data.trees import render_tubes
from equireg.transforms import voxel_grid, voxel_scale

HU_RANGE = (-1000.0, 0.0)


# --- preprocessing ------------------------------------------------------------------------------

def preprocess_ct(image_hu: np.ndarray, lung_mask: np.ndarray | None = None) -> np.ndarray:
    """Clamp HU to [-1000, 0], map to [0, 1] and multiply by the lung mask (``float32``)."""
    low, high = HU_RANGE
    image = (np.clip(np.asarray(image_hu, dtype=np.float32), low, high) - low) / (high - low)
    if lung_mask is not None:
        if np.shape(lung_mask) != image.shape:
            raise ValueError(f"preprocess_ct: lung mask shape {np.shape(lung_mask)} != image shape {image.shape}")
        image = image * (np.asarray(lung_mask) > 0.5)
    return image.astype(np.float32)


def resampled_spacing(spacing: Sequence[float], old_shape: Sequence[int],
                      new_shape: Sequence[int]) -> tuple[float, ...]:
    """Spacing after resampling ``old_shape`` -> ``new_shape`` with the end voxels kept in place."""
    return tuple(float(s) * (n - 1) / (m - 1) for s, n, m in zip(spacing, old_shape, new_shape))


def resample_points(points: np.ndarray, old_shape: Sequence[int], new_shape: Sequence[int]) -> np.ndarray:
    """Voxel points ``[K, D]`` on ``old_shape`` -> the same physical points on ``new_shape``."""
    factor = np.array([(m - 1) / (n - 1) for n, m in zip(old_shape, new_shape)])
    return np.asarray(points, dtype=np.float64) * factor


def resample(image: np.ndarray, shape: Sequence[int], order: int = 1, antialias: bool = True) -> np.ndarray:
    """Resample to ``shape`` keeping the end voxels in place (``align_corners=True``).

    Downsampled axes are Gaussian-smoothed first (sigma = (factor - 1) / 2) when ``antialias``.
    """
    image = np.asarray(image, dtype=np.float32)
    if len(shape) != image.ndim or min(shape) < 2:
        raise ValueError(f"resample: target shape {tuple(shape)} does not fit an image of shape {image.shape}")
    factors = [(n - 1) / (m - 1) for n, m in zip(image.shape, shape)]
    if antialias and any(f > 1 for f in factors):
        image = ndimage.gaussian_filter(image, [max(f - 1, 0) / 2 for f in factors], mode="nearest")
    axes = [np.arange(m, dtype=np.float64) * f for m, f in zip(shape, factors)]
    return ndimage.map_coordinates(image, np.meshgrid(*axes, indexing="ij"), order=order, mode="nearest")


def prepare_lung_ct(
    image_hu: np.ndarray,
    lung_mask: np.ndarray | None,
    spacing: Sequence[float],
    shape: Sequence[int],
) -> tuple[np.ndarray, tuple[float, ...]]:
    """Preprocess (:func:`preprocess_ct`) and resample to ``shape``; returns the image and its new
    spacing. Landmarks follow with :func:`resample_points`."""
    image = resample(preprocess_ct(image_hu, lung_mask), shape)
    return image.astype(np.float32), resampled_spacing(spacing, np.shape(image_hu), shape)


# --- phantom ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Phantom:
    """One synthetic chest: HU image, lung mask and vessel mask (bool), spacing in mm."""

    image: np.ndarray
    lung_mask: np.ndarray
    vessel_mask: np.ndarray
    spacing: tuple[float, float, float]


@dataclass(frozen=True)
class LungPair:
    """A breathing pair with a known transform, DIR-Lab style.

    ``coordinates`` (``[3, *shape]``) is the true ``phi``: each fixed voxel's position in the moving
    image in [0, 1] coordinates (``moving o phi = fixed``); ``inverse_coordinates`` the same from the
    moving grid to the fixed image. ``moving_landmarks = phi(fixed_landmarks)`` exactly (fixed
    landmarks are voxel centres). Images are in HU; :func:`preprocess_ct` makes network input.
    """

    moving: np.ndarray
    fixed: np.ndarray
    moving_mask: np.ndarray
    fixed_mask: np.ndarray
    moving_landmarks: np.ndarray
    fixed_landmarks: np.ndarray
    spacing: tuple[float, float, float]
    coordinates: np.ndarray
    inverse_coordinates: np.ndarray


_EXTENT_MM = (300.0, 320.0, 320.0)  # head-feet, front-back, right-left field of view


def _normalised_grid(shape: Sequence[int]) -> list[np.ndarray]:
    """Open grids running -1..1 along each axis."""
    return np.ogrid[tuple(slice(-1.0, 1.0, complex(0, n)) for n in shape)]


def _lungs(shape: Sequence[int], rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """Two half-ellipsoid lungs with a domed diaphragm and a heart notch; returns the mask and the
    hilum (vessel root) of each lung in voxels."""
    z, y, x = _normalised_grid(shape)
    mask = np.zeros(tuple(shape), dtype=bool)
    hila = []
    for side in (-1.0, 1.0):
        cz, cy, cx = rng.uniform(-0.05, 0.05), rng.uniform(-0.1, 0.0), side * rng.uniform(0.38, 0.46)
        az, ay, ax = rng.uniform(0.75, 0.85), rng.uniform(0.5, 0.6), rng.uniform(0.3, 0.36)
        radial = ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2
        ellipsoid = radial + ((z - cz) / az) ** 2 <= 1.0
        dome = z <= cz + rng.uniform(0.4, 0.5) * az + 0.35 * radial  # lower at the sides
        mask |= ellipsoid & dome
        hila.append(np.array([(cz - 0.05 + 1) / 2 * (shape[0] - 1), (cy + 0.05 + 1) / 2 * (shape[1] - 1),
                              (cx - side * 0.18 + 1) / 2 * (shape[2] - 1)]))
    heart = ((z - 0.35) / 0.35) ** 2 + ((y + 0.25) / 0.35) ** 2 + ((x - 0.12) / 0.3) ** 2 <= 1.0
    return mask & ~heart, hila


def _vessel_tree(rng: np.random.Generator, lung: np.ndarray, root: np.ndarray, spacing: np.ndarray
                 ) -> tuple[list[np.ndarray], list[float]]:
    """Centreline samples (voxels) and radii (mm) of a branching tree grown from ``root`` inside
    ``lung``: segments with small random turns that bend away from the lung surface, splitting by
    Murray's law."""
    step_mm = 0.5 * spacing.min()
    depth = ndimage.distance_transform_edt(lung, sampling=spacing)
    inward = np.stack(np.gradient(ndimage.gaussian_filter(depth, 1.0), *spacing))
    centres, radii = [], []
    queue = []
    for _ in range(int(rng.integers(3, 6))):
        direction = rng.normal(size=3)
        queue.append((root.copy(), direction / np.linalg.norm(direction), rng.uniform(4.0, 6.0)))
    while queue and len(centres) < 40000:
        position, direction, radius = queue.pop(0)
        to_branch = rng.uniform(12.0, 30.0)
        while radius > 0.6:
            index = tuple(np.rint(position).astype(int))
            if not all(0 <= i < n for i, n in zip(index, lung.shape)) or not lung[index]:
                break
            centres.append(position.copy())
            radii.append(radius)
            # Within ~2 cm of the surface the tree turns inwards (its terminal branches end there).
            pull = inward[(slice(None), *index)] * np.exp(-depth[index] / 20.0)
            direction = direction + 0.08 * rng.normal(size=3) + 0.3 * pull
            direction /= np.linalg.norm(direction)
            position = position + direction * step_mm / spacing
            radius *= 1.0 - 0.006 * step_mm
            to_branch -= step_mm
            if to_branch <= 0:
                to_branch = rng.uniform(12.0, 30.0)
                child = radius * rng.uniform(0.5, 0.85)
                radius = max(radius ** 3 - child ** 3, 0.0) ** (1.0 / 3.0)
                turn = rng.normal(size=3)
                turn -= turn.dot(direction) * direction  # perpendicular: a 40-70 degree branch
                turn /= np.linalg.norm(turn) + 1e-9
                angle = rng.uniform(0.7, 1.2)
                queue.append((position.copy(), np.cos(angle) * direction + np.sin(angle) * turn, child))
    return centres, radii


def lung_phantom(seed: int | Sequence[int], shape: Sequence[int] = (64, 64, 64),
                 extent_mm: Sequence[float] = _EXTENT_MM) -> Phantom:
    """A seeded synthetic chest CT: air, body (fat, soft tissue, spine), two lungs (about -850 HU
    with smooth texture) holding vessel trees (+40 HU) grown from each hilum.

    Anatomy is defined in normalised coordinates and rasterised at ``shape``, so sizes only change
    the resolution; spacing is ``extent_mm / shape``.
    """
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"lung_phantom: shape must be 3-D with sides >= 16, got {tuple(shape)}")
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in shape)
    spacing = tuple(float(e) / n for e, n in zip(extent_mm, shape))
    z, y, x = _normalised_grid(shape)
    body = np.broadcast_to((y / 0.78) ** 2 + (x / 0.94) ** 2, shape)
    image = np.full(shape, -1000.0, dtype=np.float32)
    image[body <= 1.0] = -100.0  # subcutaneous fat
    image[body <= 0.85] = 40.0  # muscle and organs
    spine = np.broadcast_to(((y - 0.6) / 0.14) ** 2 + (x / 0.12) ** 2 <= 1.0, shape)
    image[spine] = 500.0

    lung, hila = _lungs(shape, rng)
    texture = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
    texture *= 30.0 / (texture.std() + 1e-9)
    image[lung] = -850.0 + texture[lung]
    vessels = np.zeros(shape, dtype=bool)
    for root in hila:
        centres, radii = _vessel_tree(rng, lung, root, np.asarray(spacing))
        if centres:
            vessels |= render_tubes(np.asarray(centres), np.asarray(radii), shape, spacing,
                                    quantum=0.5 * min(spacing))
    vessels &= lung
    image[vessels] = 40.0
    return Phantom(image, lung, vessels, spacing)


# --- breathing deformation ----------------------------------------------------------------------

def breathing_velocity(seed: int | Sequence[int], shape: Sequence[int], spacing: Sequence[float],
                       amplitude_mm: float = 20.0) -> np.ndarray:
    """A smooth stationary velocity field (``[3, *shape]``, voxels) of exhalation seen from
    inhalation: mostly head-ward (axis 0) motion growing towards the diaphragm, some front-back
    motion, and a smooth random part; it fades outside the chest."""
    rng = np.random.default_rng(seed)
    z, y, x = _normalised_grid(shape)
    towards_diaphragm = 1.0 / (1.0 + np.exp(-(z - rng.uniform(0.1, 0.3)) / 0.25))
    envelope = np.exp(-((y / 0.9) ** 4 + (x / 1.0) ** 4))
    amplitude = amplitude_mm * rng.uniform(0.8, 1.2)
    velocity = np.zeros((3, *shape))
    velocity[0] = -amplitude * towards_diaphragm * envelope
    velocity[1] = -0.25 * amplitude * towards_diaphragm * envelope * (1.0 - y) / 2
    for axis in range(3):
        velocity[axis] += smooth_noise(rng, shape, [n / 6 for n in shape], 0.15 * amplitude) * envelope
    return velocity / np.asarray(spacing, dtype=np.float64).reshape(3, 1, 1, 1)


def compose_displacements(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """Displacement (voxels) of ``x -> outer(inner(x))`` for ``x -> x + u`` maps."""
    points = voxel_grid(inner.shape[1:]) + inner
    return inner + np.stack([ndimage.map_coordinates(outer[a], points, order=1, mode="nearest")
                             for a in range(len(outer))])


def exponentiate(velocity: np.ndarray, steps: int = 7) -> np.ndarray:
    """Displacement (voxels) of the diffeomorphism ``exp(velocity)`` by scaling and squaring."""
    displacement = velocity / 2 ** steps
    for _ in range(steps):
        displacement = compose_displacements(displacement, displacement)
    return displacement


def displacement_coordinates(displacement: np.ndarray) -> np.ndarray:
    """A voxel displacement field ``[D, *S]`` as the [0, 1] coordinate map of ``x -> x + u`` (float32)."""
    shape = displacement.shape[1:]
    return ((voxel_grid(shape) + displacement) / voxel_scale(shape).reshape(-1, 1, 1, 1)).astype(np.float32)


def lung_pair(
    seed: int | Sequence[int],
    shape: Sequence[int] = (64, 64, 64),
    amplitude_mm: float = 20.0,
    landmarks: int = 300,
    extent_mm: Sequence[float] = _EXTENT_MM,
) -> LungPair:
    """A phantom (the moving, inhaled image) and its exhaled version (the fixed image) under a
    known diffeomorphic breathing motion, with ``landmarks`` point pairs: half on vessels, half
    anywhere in the fixed lungs, at least one voxel inside."""
    seeds = np.random.SeedSequence(seed if isinstance(seed, int) else list(seed)).spawn(3)
    phantom = lung_phantom(seeds[0], shape, extent_mm)
    velocity = breathing_velocity(seeds[1], phantom.image.shape, phantom.spacing, amplitude_mm)
    forward, backward = exponentiate(velocity), exponentiate(-velocity)
    phi = voxel_grid(phantom.image.shape) + forward
    fixed = ndimage.map_coordinates(phantom.image, phi, order=1, mode="nearest").astype(np.float32)
    fixed_mask = ndimage.map_coordinates(phantom.lung_mask.astype(np.float32), phi, order=1) >= 0.5
    fixed_vessels = ndimage.map_coordinates(phantom.vessel_mask.astype(np.float32), phi, order=1) >= 0.5

    rng = np.random.default_rng(seeds[2])
    inner = ndimage.binary_erosion(fixed_mask)
    on_vessels = np.argwhere(inner & fixed_vessels)
    anywhere = np.argwhere(inner)
    if len(anywhere) < landmarks:
        raise ValueError(f"lung_pair: only {len(anywhere)} lung voxels for {landmarks} landmarks; use a larger shape")
    take = min(landmarks // 2, len(on_vessels))
    chosen = on_vessels[rng.choice(len(on_vessels), take, replace=False)] if take else np.empty((0, 3), int)
    rest = anywhere[~np.isin(np.ravel_multi_index(anywhere.T, fixed.shape),
                             np.ravel_multi_index(chosen.T, fixed.shape))]
    chosen = np.concatenate([chosen, rest[rng.choice(len(rest), landmarks - take, replace=False)]])
    fixed_landmarks = chosen.astype(np.float64)
    moving_landmarks = fixed_landmarks + forward[(slice(None), *chosen.T)].T
    return LungPair(
        moving=phantom.image, fixed=fixed,
        moving_mask=phantom.lung_mask.astype(np.float32), fixed_mask=fixed_mask.astype(np.float32),
        moving_landmarks=moving_landmarks, fixed_landmarks=fixed_landmarks, spacing=phantom.spacing,
        coordinates=displacement_coordinates(forward), inverse_coordinates=displacement_coordinates(backward),
    )
