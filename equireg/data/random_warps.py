"""Random smooth invertible warps: stationary velocity fields of smoothed noise, integrated by
scaling and squaring (:func:`equireg.data.lung.exponentiate`), so each warp has a positive Jacobian
and an inverse computed the same way (``exp(-v)``)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage


def smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma: float | Sequence[float],
                 scale: float = 1.0) -> np.ndarray:
    """White noise Gaussian-smoothed by ``sigma`` voxels (periodic, so the canvas edges are not
    special), scaled to a largest magnitude of ``scale``."""
    noise = ndimage.gaussian_filter(rng.standard_normal(tuple(shape)), sigma, mode="wrap")
    # scale first, then divide: the order the breathing motions were computed in, bit for bit
    return scale * noise / (np.abs(noise).max() + 1e-9)


def random_velocity(rng: np.random.Generator, shape: Sequence[int], spacing: float, smoothness_mm: float,
                    rms_mm: float, mask: np.ndarray) -> np.ndarray:
    """A velocity field ``[D, *shape]`` in voxels: independent :func:`smooth_noise` per axis (sigma
    ``smoothness_mm``), scaled so that its root-mean-square length inside ``mask`` is ``rms_mm``;
    for warps of a few mm the displacement of ``exp(v)`` is close to ``v``, so ``rms_mm`` is about
    the warp's RMS displacement there."""
    velocity = np.stack([smooth_noise(rng, shape, smoothness_mm / spacing) for _ in shape])
    rms = np.sqrt((velocity[:, mask] ** 2).sum(axis=0).mean())
    return velocity * (rms_mm / spacing / rms)
