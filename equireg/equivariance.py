"""Measured translation equivariance of a registration network (carl.md §1).

Conventions: images act by precomposition, ``(A∘W)(x) = A(x + w)`` for the translation
``W(x) = x + w``, so the array of ``A∘W`` is that of ``A`` moved by ``-w`` voxels; ``φ = Φ[A, B]``
maps fixed coordinates to moving coordinates (``A∘φ ≈ B``). [W,U]-equivariance means
``Φ[A∘W, B∘U] = W⁻¹∘Φ[A, B]∘U``, i.e. ``Φ[A∘W, B∘U](x) = Φ[A, B](x + u) - w``; [U,U] is the
case ``W = U``. The error is measured in voxels over the foreground of the shifted fixed image.

Exactness needs shifts that respect the network's strides, and, for trees with ``Downsample``,
padded sizes ``N`` with ``N - 1`` divisible by the total pooling factor: coordinates put voxels
0 and ``N - 1`` at 0 and 1 on every level, so otherwise one coarse voxel is not exactly ``f``
fine voxels and [W,U] picks up an error of about ``|w - u|·(f - 1) / (f·n)`` voxels (``n`` the
coarse size): 0.5-0.7 voxels for the CARL tree on 56-96 voxel images with ``|w - u|`` ≈ 11-18.
"""

from __future__ import annotations

import operator
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from equireg.transforms import coordinates_to_voxels, identity_map, voxels_to_coordinates

Shift = Sequence[int]


def _check_shift(name: str, shift: Shift, dimension: int) -> tuple[int, ...]:
    try:
        values = tuple(operator.index(v) for v in shift)
    except TypeError:
        values = ()
    if len(values) != dimension:
        raise ValueError(f"{name}: expected {dimension} integer voxel shifts, got {shift!r}")
    return values


def _shift_coordinates(shift: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """A voxel shift as a [0, 1]-coordinate offset ``[1, D, 1, ...]`` on ``like``'s grid."""
    offset = torch.tensor(shift, dtype=like.dtype, device=like.device).reshape(1, -1, *[1] * len(shift))
    return voxels_to_coordinates(offset, like.shape[2:])


def _pad_arguments(per_axis: Sequence[tuple[int, int]]) -> list[int]:
    """F.pad wants (before, after) pairs from the last axis backwards."""
    return [amount for pair in reversed(per_axis) for amount in pair]


def translate(image: torch.Tensor, shift: Shift) -> torch.Tensor:
    """``image∘W`` for ``W(x) = x + shift`` (voxels): ``out[i] = image[i + shift]``, zero fill."""
    shift = _check_shift("translate: shift", shift, image.dim() - 2)
    return F.pad(image, _pad_arguments([(-s, s) for s in shift]))


def _margins(margin: int | Shift | None, shifts: Sequence[tuple[int, ...]], dimension: int) -> tuple[int, ...]:
    if margin is None:
        return tuple(max(abs(s[d]) for s in shifts) for d in range(dimension))
    if isinstance(margin, int):
        margin = (margin,) * dimension
    margin = tuple(margin)
    if len(margin) != dimension or any(m < 0 for m in margin):
        raise ValueError(f"margin: expected {dimension} non-negative voxel counts, got {margin!r}")
    return margin


def _summary(errors: torch.Tensor) -> dict[str, float]:
    errors = errors.double()
    return {
        "median_error_vox": float(errors.median()),
        "p95_error_vox": float(torch.quantile(errors, 0.95)),
        "mean_error_vox": float(errors.mean()),
        "max_error_vox": float(errors.max()),
        "foreground_voxels": int(errors.numel()),
    }


@torch.no_grad()
def measure_equivariance(
    net: nn.Module, moving: torch.Tensor, fixed: torch.Tensor, shift_moving: Shift, shift_fixed: Shift,
    margin: int | Shift | None = None, foreground: torch.Tensor | None = None,
) -> dict[str, float]:
    """Error of ``Φ[A∘W, B∘U]`` against ``W⁻¹∘Φ[A, B]∘U`` in voxels, over the fixed foreground.

    ``moving`` (A) and ``fixed`` (B) are ``[B, C, *S]``; ``shift_moving`` (w) and ``shift_fixed``
    (u) are integer voxel shifts per array axis. Both images are first zero-padded by ``margin``
    voxels per side (default: the largest shift per axis) so no content leaves the frame; the
    network sees the padded images, so pick shifts and margins that respect its strides. The
    foreground is ``fixed != 0`` unless ``foreground`` (a mask shaped like ``fixed``) is given;
    it is translated with the fixed image. ``net`` runs in eval mode and gets its mode back.

    Returns median, 95th percentile, mean and max of the error length, and the voxel count.
    """
    if moving.shape != fixed.shape or moving.dim() < 3:
        raise ValueError(f"measure_equivariance: moving {tuple(moving.shape)} and fixed "
                         f"{tuple(fixed.shape)} must be [B, C, *S] of equal shape")
    dimension = fixed.dim() - 2
    w = _check_shift("shift_moving", shift_moving, dimension)
    u = _check_shift("shift_fixed", shift_fixed, dimension)
    if foreground is None:
        foreground = fixed != 0
    elif foreground.shape != fixed.shape:
        raise ValueError(f"foreground: shape {tuple(foreground.shape)} differs from fixed {tuple(fixed.shape)}")
    pad = _pad_arguments([(m, m) for m in _margins(margin, [w, u], dimension)])
    moving, fixed, foreground = F.pad(moving, pad), F.pad(fixed, pad), F.pad(foreground.float(), pad)
    shape = fixed.shape[2:]
    identity = identity_map(shape, fixed.device, fixed.dtype)

    was_training = net.training
    net.eval()
    try:
        phi = net(moving, fixed)
        phi_shifted = net(translate(moving, w), translate(fixed, u))
    finally:
        net.train(was_training)
    expected = phi(identity + _shift_coordinates(u, fixed)) - _shift_coordinates(w, fixed)
    error = coordinates_to_voxels(phi_shifted(identity) - expected, shape).norm(dim=1)
    mask = translate(foreground, u).amax(1) > 0
    if not mask.any():
        raise ValueError("measure_equivariance: the fixed image has no foreground voxels")
    return _summary(error[mask])


def equivariance_report(
    net: nn.Module, moving: torch.Tensor, fixed: torch.Tensor, shift_moving: Shift, shift_fixed: Shift,
    margin: int | Shift | None = None, foreground: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Both cases as a JSON-able dict: ``"UU"`` shifts both images by ``shift_fixed``;
    ``"WU"`` shifts moving by ``shift_moving`` and fixed by ``shift_fixed``.

    The margin (default: the largest shift of either case per axis) is shared, so both cases
    see the same padded images.
    """
    dimension = fixed.dim() - 2
    w = _check_shift("shift_moving", shift_moving, dimension)
    u = _check_shift("shift_fixed", shift_fixed, dimension)
    margins = _margins(margin, [w, u], dimension)
    return {
        "shift_moving": list(w),
        "shift_fixed": list(u),
        "margin": list(margins),
        "UU": measure_equivariance(net, moving, fixed, u, u, margins, foreground),
        "WU": measure_equivariance(net, moving, fixed, w, u, margins, foreground),
    }
