"""Metrics shared by every method: Dice, DSC30, HD95, endpoint error against an exact map, TRE/mTRE
in mm, % folds and SDlogJ.

All functions take numpy arrays or torch tensors and return plain Python floats or numpy arrays,
so result files hold the same numbers whatever produced them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from equireg.transforms import Transform, inside, jacobian_determinant, map_points, voxel_scale

ArrayLike = np.ndarray | torch.Tensor


def _numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def dice(prediction: ArrayLike, target: ArrayLike) -> float:
    """Dice overlap of two binary masks; 1.0 when both are empty (nothing to disagree on)."""
    a, b = _numpy(prediction).astype(bool), _numpy(target).astype(bool)
    if a.shape != b.shape:
        raise ValueError(f"Dice of masks with different shapes {a.shape} and {b.shape}")
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(a, b).sum() / total)


def endpoint_error_voxels(coordinate_map: ArrayLike, exact: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Mean endpoint error (voxels of the moving image) of a coordinate map ``[D, *S]`` against the
    exact one, over the whole fixed grid or where ``mask`` (``[*S]``) is set.

    Both maps are in [0, 1] coordinates; axis ``d`` is scaled by ``N_d - 1`` of the grid (the
    registrations here map between grids of one size).
    """
    phi, truth = _numpy(coordinate_map).astype(np.float64), _numpy(exact).astype(np.float64)
    if phi.shape != truth.shape:
        raise ValueError(f"endpoint error of maps with different shapes {phi.shape} and {truth.shape}")
    scale = voxel_scale(phi.shape[1:]).reshape(-1, *[1] * (phi.ndim - 1))
    error = np.sqrt((((phi - truth) * scale) ** 2).sum(axis=0))
    if mask is not None:
        error = error[_numpy(mask).astype(bool)]
        if error.size == 0:
            raise ValueError("endpoint error: the mask selects no voxel")
    return float(error.mean())


def dice_per_label(prediction: ArrayLike, target: ArrayLike, labels: Sequence[int] | None = None) -> dict[int, float]:
    """Dice for each label of integer label maps (all non-zero labels of ``target`` by default)."""
    a, b = _numpy(prediction), _numpy(target)
    if labels is None:
        labels = [int(v) for v in np.unique(b) if v != 0]
    if not labels:
        raise ValueError("label map has no foreground label: Dice is undefined")
    return {int(label): dice(a == label, b == label) for label in labels}


def label_dice(prediction: np.ndarray, target: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Dice of each of ``labels`` (present in ``target``) between two maps of small non-negative
    integer labels such as AAL's 1..116, from one joint histogram: :func:`dice_per_label` takes
    one pass per label, 116 here."""
    size = int(max(prediction.max(), target.max(), labels.max())) + 1
    joint = np.bincount(prediction.ravel().astype(np.int64) * size + target.ravel().astype(np.int64),
                        minlength=size * size).reshape(size, size)
    overlap = np.diag(joint)[labels]
    return 2.0 * overlap / (joint.sum(axis=1)[labels] + joint.sum(axis=0)[labels])


def landmark_errors_mm(
    transform: Transform,
    fixed_points: ArrayLike,
    moving_points: ArrayLike,
    fixed_shape: Sequence[int],
    moving_shape: Sequence[int],
    moving_spacing: Sequence[float],
) -> np.ndarray:
    """TRE per landmark in mm.

    ``fixed_points`` and ``moving_points`` are ``[K, D]`` zero-based voxel indices in array-axis
    order. Each fixed landmark is mapped by ``transform`` (fixed -> moving coordinates) and
    compared with its moving counterpart; the difference is scaled by the moving spacing.
    """
    fixed, moving = _numpy(fixed_points), _numpy(moving_points)
    if fixed.shape != moving.shape or fixed.ndim != 2 or fixed.shape[1] != len(fixed_shape):
        raise ValueError(f"landmarks must be two [K, {len(fixed_shape)}] arrays, got "
                         f"{fixed.shape} and {moving.shape}")
    outside = ~inside(moving, moving_shape)
    if outside.any():
        raise ValueError(f"{int(outside.sum())} moving landmarks lie outside the image {tuple(moving_shape)}")
    mapped = map_points(transform, fixed[None], fixed_shape, moving_shape, what="fixed landmarks")[0]
    return point_errors_mm(mapped, moving, moving_spacing)


def point_errors_mm(points: ArrayLike, targets: ArrayLike, spacing: Sequence[float]) -> np.ndarray:
    """Distance in mm between corresponding ``[K, D]`` voxel positions on one grid of ``spacing``
    (before registration: the fixed landmarks against the moving ones)."""
    difference = _numpy(points).astype(np.float64) - _numpy(targets).astype(np.float64)
    return np.linalg.norm(difference * np.asarray(spacing), axis=1)


def fold_percentage(coordinate_map: torch.Tensor) -> float:
    """Percentage of voxels where the Jacobian determinant of ``phi`` is negative."""
    with torch.no_grad():
        return float((jacobian_determinant(coordinate_map) < 0).double().mean() * 100.0)


def sd_log_jacobian(coordinate_map: torch.Tensor) -> float:
    """SDlogJ (Learn2Reg): standard deviation of the log Jacobian determinant of ``phi`` ``[1, D, *S]``,
    determinants clipped to [1e-9, 1e9] so that folds count as very large contractions, not NaN."""
    with torch.no_grad():
        determinant = jacobian_determinant(coordinate_map.double())
        return float(torch.log(determinant.clamp(1e-9, 1e9)).std())


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hd95(prediction: ArrayLike, target: ArrayLike, spacing: Sequence[float] | None = None) -> float:
    """95th percentile of the symmetric surface distance between two binary masks (Learn2Reg's HD95),
    in the units of ``spacing`` (default: voxels). 0 when both are empty, NaN when one is."""
    from scipy import ndimage

    a, b = _numpy(prediction).astype(bool), _numpy(target).astype(bool)
    if a.shape != b.shape:
        raise ValueError(f"HD95 of masks with different shapes {a.shape} and {b.shape}")
    if not a.any() and not b.any():
        return 0.0
    if not a.any() or not b.any():
        return float("nan")
    spacing = tuple(spacing) if spacing is not None else (1.0,) * a.ndim
    surface_a, surface_b = _surface(a), _surface(b)
    to_b = ndimage.distance_transform_edt(~surface_b, sampling=spacing)[surface_a]
    to_a = ndimage.distance_transform_edt(~surface_a, sampling=spacing)[surface_b]
    return float(np.percentile(np.concatenate([to_b, to_a]), 95))


def dsc30(dice_values: Sequence[float] | np.ndarray) -> float:
    """DSC30 (Learn2Reg): mean of the lowest 30 % of the Dice values (at least one), the robustness
    of a method on its hardest cases."""
    values = np.sort(np.asarray(dice_values, dtype=np.float64))
    if values.size == 0:
        raise ValueError("DSC30 of no Dice values")
    return float(values[:max(1, int(np.ceil(0.3 * values.size)))].mean())
