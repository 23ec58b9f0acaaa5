"""Training losses: image similarities, the diffusion regulariser, GradICON (carl.md §4).

Conventions:

* A *similarity* is a callable ``sim(warped, fixed) -> scalar`` on ``[B, C, *S]`` images; lower
  is better. :func:`similarity` builds one by name (``"lncc"``, ``"ssd"``, ``"blurred_ssd"``).
* A *loss* wraps a registration network (``net(moving, fixed) -> Transform``, see
  :mod:`equireg.wrappers`) and is called as ``loss(moving, fixed) -> dict`` with the total under
  ``"loss"`` and the other terms as scalars under descriptive keys. The network is stored as
  ``regis_net``, upstream's attribute name, so state dicts of upstream loss modules load.

The maths follow icon-registration 1.1.9 term by term (``LNCC``, ``SSD``, ``BlurredSSD``,
``GradientICON``, ``GradientICONSparse``, ``DiffusionRegularizedNet``), including its random
draws: with the same seed before the call, the numbers agree with upstream to float round-off.
Upstream's "inbounds tag" is not needed because none of these similarities reads it.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from equireg.transforms import Transform, identity_map, jacobian_determinant, warp
from equireg.wrappers import batch_norm_groups, directions_batchable, features_shared

Similarity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}

#: step of the finite differences of the inverse-consistency error (upstream's value)
GRADICON_DELTA = 1e-3


def _check_pair(name: str, warped: torch.Tensor, fixed: torch.Tensor) -> None:
    if warped.shape != fixed.shape:
        raise ValueError(f"{name}: warped {tuple(warped.shape)} and fixed {tuple(fixed.shape)} differ in shape")
    if warped.dim() - 2 not in _CONV:
        raise ValueError(f"{name}: images must be [B, C, *S] with 1-3 spatial axes, got {tuple(warped.shape)}")


def _check_sigma(name: str, sigma: float) -> float:
    if not (isinstance(sigma, Real) and sigma > 0):
        raise ValueError(f"{name}: sigma must be a positive number, got {sigma!r}")
    return sigma


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """The normalised 1-D Gaussian of :func:`gaussian_blur`, ``±ceil(2·sigma)`` taps, float32."""
    half = math.ceil(2 * sigma)
    # built in float32 on the CPU like upstream, so the kernel is bit-identical to theirs
    x = torch.linspace(-half, half, 2 * half + 1)
    kernel = torch.exp(-0.5 * (x / sigma).pow(2))
    return kernel / kernel.sum()


def _band_matrix(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """``[size, size]`` matrix ``T`` with ``(x @ T)[j] = sum_i x[i] kernel[i - j + half]``: the
    "same" convolution with zero padding along one axis of ``size`` voxels."""
    half = kernel.numel() // 2
    index = torch.arange(size)
    offset = index[:, None] - index[None, :]
    taps = kernel[(offset + half).clamp(0, 2 * half)]
    return torch.where(offset.abs() <= half, taps, torch.zeros(()))


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of every channel, zero padding ("same").

    The kernel spans ``±ceil(2·sigma)`` voxels (width 4·sigma + 1 for integer sigma, as upstream).
    Each axis is one matmul with a banded matrix (:func:`_band_matrix`): the same sums as a
    convolution, to float round-off, and 7-10x faster than torch's 1-channel CPU convolution
    (its slow non-oneDNN path) for an LNCC at 98×70 and 48³, though it multiplies by the
    zeros outside the band (an axis of N voxels costs N products per voxel, not 4·sigma + 1).
    """
    kernel = gaussian_kernel(sigma)
    out = image
    for axis in range(2, image.dim()):
        band = _band_matrix(kernel, image.shape[axis]).to(image.device, image.dtype)
        out = (out.transpose(axis, -1) @ band).transpose(axis, -1)
    return out


class LNCC:
    """Local normalised cross-correlation with a Gaussian window: ``1 - mean(local NCC)``.

    Local variances are clamped at 0 and offset by 1e-5, so flat regions count as uncorrelated
    (an image compared with itself scores ``1 - var / (var + 1e-5)`` locally, not exactly 0).
    """

    def __init__(self, sigma: float):
        self.sigma = _check_sigma("LNCC", sigma)

    def __call__(self, warped: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        _check_pair("LNCC", warped, fixed)
        # the five blurs as one call on stacked channels: fewer, larger matmuls
        stacked = torch.cat([warped, fixed, warped * fixed, warped * warped, fixed * fixed], 1)
        mean_i, mean_j, mean_ij, mean_ii, mean_jj = gaussian_blur(stacked, self.sigma).split(warped.shape[1], 1)
        covariance = mean_ij - mean_i * mean_j
        variance_i = torch.relu(mean_ii - mean_i ** 2) + 1e-5
        variance_j = torch.relu(mean_jj - mean_j ** 2) + 1e-5
        return 1 - torch.mean(covariance / torch.sqrt(variance_i * variance_j))

    def __repr__(self) -> str:
        return f"LNCC(sigma={self.sigma})"


class SSD:
    """Mean squared difference."""

    def __call__(self, warped: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        _check_pair("SSD", warped, fixed)
        return torch.mean((warped - fixed) ** 2)

    def __repr__(self) -> str:
        return "SSD()"


class BlurredSSD:
    """Mean squared difference of the Gaussian-blurred images (smoother for thin structures)."""

    def __init__(self, sigma: float):
        self.sigma = _check_sigma("BlurredSSD", sigma)

    def __call__(self, warped: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        _check_pair("BlurredSSD", warped, fixed)
        return torch.mean((gaussian_blur(warped, self.sigma) - gaussian_blur(fixed, self.sigma)) ** 2)

    def __repr__(self) -> str:
        return f"BlurredSSD(sigma={self.sigma})"


SIMILARITIES: dict[str, type] = {"lncc": LNCC, "ssd": SSD, "blurred_ssd": BlurredSSD}


def similarity(name: str, **kwargs: Any) -> Similarity:
    """Build a similarity by name: ``similarity("lncc", sigma=4)``, ``"ssd"``, ``"blurred_ssd"``."""
    if name not in SIMILARITIES:
        raise ValueError(f"unknown similarity {name!r}; known: {', '.join(sorted(SIMILARITIES))}")
    try:
        return SIMILARITIES[name](**kwargs)
    except TypeError as error:
        raise ValueError(f"similarity {name!r}: bad arguments {kwargs}: {error}") from None


def diffusion_penalty(displacement: torch.Tensor) -> torch.Tensor:
    """``sum over axes of mean((forward difference of u)^2) * N0^2`` for ``u`` = ``[B, D, *S]``.

    ``N0`` is the size of the *first* spatial axis, for every axis (upstream's scaling, kept so
    that its λ values transfer); for a square or cubic grid it is the usual ``|∇u|^2`` in voxels.
    """
    if displacement.dim() < 3:
        raise ValueError(f"diffusion_penalty: expected [B, D, *S], got {tuple(displacement.shape)}")
    penalty = sum(torch.mean(torch.diff(displacement, dim=axis) ** 2) for axis in range(2, displacement.dim()))
    return penalty * displacement.shape[2] ** 2


def _fold_count(coordinate_map: torch.Tensor) -> torch.Tensor:
    """Voxels with a negative Jacobian determinant, per image (upstream's ``flips``)."""
    return torch.sum(jacobian_determinant(coordinate_map.detach()) < 0) / coordinate_map.shape[0]


def _check_lmbda(name: str, lmbda: float) -> float:
    if not (isinstance(lmbda, Real) and lmbda >= 0):
        raise ValueError(f"{name}: lmbda must be a non-negative number, got {lmbda!r}")
    return lmbda


def _check_inputs(name: str, moving: torch.Tensor, fixed: torch.Tensor) -> None:
    if moving.shape != fixed.shape or moving.dim() < 3:
        raise ValueError(f"{name}: moving {tuple(moving.shape)} and fixed {tuple(fixed.shape)} "
                         "must be [B, C, *S] of equal shape")


class GradICONLoss(nn.Module):
    """GradICON: ``sim(A∘φ_AB, B) + sim(B∘φ_BA, A) + λ Σ_d mean(((e(x) - e(x + δ e_d)) / δ)^2)``.

    ``e(x) = x - φ_AB(φ_BA(x))`` is evaluated at ``x = identity + s·N(0, 1) / N_last`` with one
    noise draw of the identity map's shape (batch 1, shared by the batch) per call, ``δ = 1e-3``.
    ``sparse=True`` is upstream's ``GradientICONSparse``: ``s = 2`` and ``x`` subsampled by 2 on
    every axis (2^D times fewer points); otherwise ``s = 1`` on the full grid.

    Returns "loss", "similarity" (both directions summed), "inverse_consistency" (without λ),
    "transform_magnitude" (mean squared displacement of φ_AB) and "folds" (voxels per image with
    a negative Jacobian determinant, on φ_BA as upstream; 3-D counts use the forward-difference
    stencil of :func:`~equireg.transforms.jacobian_determinant`, upstream's a backward one).
    """

    def __init__(self, net: nn.Module, similarity: Similarity, lmbda: float, sparse: bool = False):
        super().__init__()
        if not callable(similarity):
            raise TypeError(f"GradICONLoss: similarity must be callable, got {similarity!r}")
        self.regis_net = net
        self.similarity = similarity
        self.lmbda = _check_lmbda("GradICONLoss", lmbda)
        self.sparse = bool(sparse)

    def both_directions(self, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[Transform, Transform]:
        """``net(A, B)`` and ``net(B, A)``. Where the network allows
        (:func:`~equireg.wrappers.directions_batchable`) as one call on ``cat(A, B), cat(B, A)`` with
        batch norm per direction: the same numbers (to float32 summation order), with each weight
        read, and each small deep layer launched, once instead of twice. Ξ featurizes A and B once
        for both directions either way."""
        batch = moving.shape[0]
        if directions_batchable(self.regis_net):
            with features_shared(self.regis_net, groups=2), batch_norm_groups(self.regis_net, 2):
                phi = self.regis_net(torch.cat([moving, fixed]), torch.cat([fixed, moving]))
            return phi.select(slice(0, batch)), phi.select(slice(batch, None))
        with features_shared(self.regis_net):
            return self.regis_net(moving, fixed), self.regis_net(fixed, moving)

    def _sample_points(self, identity: torch.Tensor) -> torch.Tensor:
        scale = 2 if self.sparse else 1
        # drawn on the CPU generator whatever the device, so a seed fixes it everywhere
        points = identity + scale * torch.randn(identity.shape).to(identity) / identity.shape[-1]
        if self.sparse:
            points = points[(slice(None), slice(None), *[slice(None, None, 2)] * (identity.dim() - 2))]
        return points

    def inverse_consistency(self, phi_AB: Transform, phi_BA: Transform, identity: torch.Tensor) -> torch.Tensor:
        """The gradient inverse-consistency penalty (without λ) at fresh random points."""
        points = self._sample_points(identity)
        error = points - phi_AB(phi_BA(points))
        dimension = identity.shape[1]
        penalty = 0
        for d in range(dimension):
            offset = torch.zeros(1, dimension, *[1] * dimension, dtype=identity.dtype, device=identity.device)
            offset[0, d] = GRADICON_DELTA
            shifted = points + offset
            error_d = shifted - phi_AB(phi_BA(shifted))
            penalty = penalty + torch.mean(((error - error_d) / GRADICON_DELTA) ** 2)
        return penalty

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_inputs("GradICONLoss", moving, fixed)
        identity = identity_map(moving.shape[2:], moving.device, moving.dtype)
        phi_AB, phi_BA = self.both_directions(moving, fixed)
        field_AB, field_BA = phi_AB(identity), phi_BA(identity)
        similarity_loss = (self.similarity(warp(moving, field_AB), fixed)
                           + self.similarity(warp(fixed, field_BA), moving))
        inverse_consistency = self.inverse_consistency(phi_AB, phi_BA, identity)
        return {
            "loss": self.lmbda * inverse_consistency + similarity_loss,
            "similarity": similarity_loss,
            "inverse_consistency": inverse_consistency,
            "transform_magnitude": torch.mean((identity - field_AB) ** 2),
            # upstream counts the folds of φ_BA; the loss is symmetric so either would do
            "folds": _fold_count(field_BA),
        }


class DiffusionLoss(nn.Module):
    """One direction, ``2·sim(A∘φ, B) + λ·diffusion_penalty(φ - id)`` (CARL's first stage).

    The factor 2 is upstream's (``DiffusionRegularizedNet``): it puts the similarity on the scale
    of GradICON's two-direction sum, so λ means the same in both stages; "similarity" reports it
    doubled, so "loss" = similarity + λ·regularization.
    """

    def __init__(self, net: nn.Module, similarity: Similarity, lmbda: float):
        super().__init__()
        if not callable(similarity):
            raise TypeError(f"DiffusionLoss: similarity must be callable, got {similarity!r}")
        self.regis_net = net
        self.similarity = similarity
        self.lmbda = _check_lmbda("DiffusionLoss", lmbda)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_inputs("DiffusionLoss", moving, fixed)
        identity = identity_map(moving.shape[2:], moving.device, moving.dtype)
        field = self.regis_net(moving, fixed)(identity)
        similarity_loss = 2 * self.similarity(warp(moving, field), fixed)
        regularization = diffusion_penalty(identity - field)
        return {
            "loss": self.lmbda * regularization + similarity_loss,
            "similarity": similarity_loss,
            "regularization": regularization,
            "transform_magnitude": torch.mean((identity - field) ** 2),
            "folds": _fold_count(field),
        }
