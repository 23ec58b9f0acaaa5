"""The 1-D toy of carl.md §1: coordinate attention inverts a diffeomorphism.

When the images are themselves diffeomorphisms of [0, 1], the exact registration is
``Ξ[A, B] = A⁻¹∘B``. With ``A(x) = cos(πx/2)`` and ``B(x) = x + 0.07 sin(3πx)`` that is
``(2/π)·arccos(x + 0.07 sin 3πx)``. Every fixed voxel (query intensity ``B(x)``) attends to the
moving voxels whose intensity ``A(y)`` is closest and returns the mean of their coordinates ``y``.

The toy runs a real 1-D Ξ forward (:class:`~equireg.attention.CoordinateAttention`: padding,
per-voxel normalisation, extrapolated coordinate values, the chunked attention kernel) with a
fixed, training-free featurizer :class:`IntensityEmbedding` whose feature dot products form a
Gaussian kernel in intensity, so the attention weights are ``≈ exp(-(A(y) - B(x))² / 2σ²)``
with ``σ = kernel_width / feature_scale``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from equireg.attention import CoordinateAttention
from equireg.transforms import identity_map


def moving_image(x: torch.Tensor) -> torch.Tensor:
    """A(x) = cos(πx/2)."""
    return torch.cos(math.pi * x / 2)


def fixed_image(x: torch.Tensor) -> torch.Tensor:
    """B(x) = x + 0.07 sin(3πx)."""
    return x + 0.07 * torch.sin(3 * math.pi * x)


def analytic_solution(x: torch.Tensor) -> torch.Tensor:
    """A⁻¹∘B = (2/π)·arccos(x + 0.07 sin 3πx)."""
    return 2 / math.pi * torch.arccos(fixed_image(x).clamp(-1.0, 1.0))


class IntensityEmbedding(nn.Module):
    """Pointwise features ``√g_k (cos ω_k v, sin ω_k v)``, ``ω_k = k·π/2``, ``g_k = exp(-(ω_k τ)²/2)``.

    Their dot product ``Σ_k g_k cos(ω_k (a - b))`` is a Gaussian of width ``τ`` in the
    intensity difference (periodic with period 4, beyond the [-1, 1] range of differences).
    """

    def __init__(self, kernel_width: float, frequencies: int | None = None):
        super().__init__()
        if kernel_width <= 0:
            raise ValueError(f"IntensityEmbedding: kernel_width must be > 0, got {kernel_width}")
        spacing = math.pi / 2
        # past 5/τ the Gaussian weights are below e^-12.5
        count = frequencies or int(math.ceil(5 / (kernel_width * spacing))) + 1
        omega = spacing * torch.arange(count, dtype=torch.float64)
        self.register_buffer("omega", omega, persistent=False)
        self.register_buffer("weight", torch.exp(-0.5 * (omega * kernel_width) ** 2).sqrt(), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[1] != 1:
            raise ValueError(f"IntensityEmbedding: expected one channel, got {tuple(image.shape)}")
        shape = (1, -1) + (1,) * (image.dim() - 2)
        phase = image * self.omega.to(image.dtype).reshape(shape)
        weight = self.weight.to(image.dtype).reshape(shape)
        return torch.cat([weight * torch.cos(phase), weight[:, 1:] * torch.sin(phase[:, 1:])], 1)


def toy_error(estimate: np.ndarray, analytic: np.ndarray, interior: np.ndarray) -> tuple[np.ndarray, float]:
    """The toy's error, one definition: ``|estimate - A⁻¹∘B|`` at every point, and its largest
    value where ``interior`` is set (away from the ends, where the inversion is ill-posed)."""
    error = np.abs(np.asarray(estimate, dtype=np.float64) - np.asarray(analytic, dtype=np.float64))
    return error, float(error[np.asarray(interior, dtype=bool)].max())


def solve_toy(size: int = 512, kernel_width: float = 0.1, feature_scale: float = 40.0,
              margin: float = 0.05, padding: int = 9) -> dict[str, Any]:
    """Register ``A`` to ``B`` sampled on ``size`` voxels with a 1-D Ξ; compare with ``A⁻¹∘B``.

    Returns numpy arrays ``x``, ``estimate``, ``analytic``, ``interior`` (``margin <= x <= 1 -
    margin``; at the ends ``A`` is flat or meets the zero padding, so the inversion is ill-posed
    there) and ``error``, and ``max_error`` (:func:`toy_error`).
    """
    if size < 16:
        raise ValueError(f"solve_toy: size must be >= 16, got {size}")
    if not 0 <= margin < 0.5:
        raise ValueError(f"solve_toy: margin must lie in [0, 0.5), got {margin}")
    x = identity_map((size,), dtype=torch.float64)
    xi = CoordinateAttention(1, padding=padding, feature_scale=feature_scale,
                             featurizer=IntensityEmbedding(kernel_width)).double()
    with torch.no_grad():
        estimate = x + xi(moving_image(x), fixed_image(x))
    x, estimate = x[0, 0].numpy(), estimate[0, 0].numpy()
    analytic = analytic_solution(torch.from_numpy(x)).numpy()
    interior = (x >= margin) & (x <= 1 - margin)
    error, max_error = toy_error(estimate, analytic, interior)
    return {
        "x": x, "estimate": estimate, "analytic": analytic, "interior": interior, "error": error,
        "max_error": max_error, "margin": margin,
    }


def plot_toy(result: dict[str, Any]):
    """Figure of the toy (a matplotlib Figure): the two images, Ξ's answer against ``A⁻¹∘B``, and
    the error. ``result`` as returned by :func:`solve_toy`."""
    import matplotlib.pyplot as plt

    x = result["x"]
    figure, axes = plt.subplots(1, 3, figsize=(11, 3.2), constrained_layout=True)
    grid = torch.from_numpy(x)
    axes[0].plot(x, moving_image(grid).numpy(), label="A(x) = cos(πx/2)")
    axes[0].plot(x, fixed_image(grid).numpy(), label="B(x) = x + 0.07 sin 3πx")
    axes[0].set_title("images")
    axes[1].plot(x, result["analytic"], "k", lw=3, alpha=0.35, label="A⁻¹∘B (analytic)")
    axes[1].plot(x, result["estimate"], "C3", lw=1.2, label="Ξ[A, B]")
    axes[1].set_title("registration")
    axes[2].semilogy(x, np.maximum(result["error"], 1e-12), "C3")
    margin = result["margin"]
    for edge in (margin, 1 - margin):
        axes[2].axvline(edge, color="0.6", ls="--", lw=0.8)
    axes[2].set_title(f"|error|, max {result['max_error']:.1e} inside the dashes")
    for axis in axes[:2]:
        axis.legend(fontsize=8)
    for axis in axes:
        axis.set_xlabel("x")
    return figure
