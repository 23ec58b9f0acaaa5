"""Coordinates, warping and conversions: the one home of equireg's spatial conventions.

Convention (ICON's, shared by every method so numbers and weights are comparable):

* Images are tensors ``[B, C, *spatial]`` with 1, 2 or 3 spatial axes.
* A *coordinate map* is a tensor ``[B, D, *spatial]``; channel ``d`` is the position along
  array axis ``d``, normalised to ``[0, 1]`` (voxel ``i`` of an axis with ``N`` voxels sits at
  ``i / (N - 1)``).
* A *transform* ``phi`` maps coordinate maps to coordinate maps. Registering moving ``A`` to
  fixed ``B`` yields ``phi`` with ``A o phi ~ B``: ``phi`` takes fixed-image coordinates to
  moving-image coordinates, exactly like an ITK transform takes fixed points to moving points.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

CoordinateFn = Callable[[torch.Tensor], torch.Tensor]


def identity_map(
    shape: Sequence[int], device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The identity coordinate map ``[1, D, *shape]``: channel ``d`` runs 0..1 along axis ``d``."""
    # built in float64 then rounded, so the grid is bit-identical to icon-registration's numpy grid
    axes = [torch.linspace(0.0, 1.0, n, dtype=torch.float64).to(device=device, dtype=dtype) if n > 1 else
            torch.zeros(1, device=device, dtype=dtype) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]


def _as_grid(coordinates: torch.Tensor) -> torch.Tensor:
    """[B, D, *S] coordinates in [0, 1] -> grid_sample grid [B, *S, D] in [-1, 1], xy(z) order."""
    dimension = coordinates.shape[1]
    grid = coordinates.flip(1) * 2.0 - 1.0
    return grid.permute(0, *range(2, 2 + dimension), 1)


def _expand_batch(image: torch.Tensor, coordinates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if image.shape[0] != coordinates.shape[0]:
        batch = max(image.shape[0], coordinates.shape[0])
        image = image.expand(batch, *image.shape[1:])
        coordinates = coordinates.expand(batch, *coordinates.shape[1:])
    return image, coordinates


def sample(
    image: torch.Tensor, coordinates: torch.Tensor, mode: str = "bilinear", padding_mode: str = "border"
) -> torch.Tensor:
    """Evaluate ``image`` at ``coordinates`` (``[B, D, *S']``), linear by default.

    1-D images are handled as 2-D images of height 1. ``align_corners=True`` makes grid points
    exact, so sampling at the identity map returns the image.
    """
    dimension = coordinates.shape[1]
    if image.dim() != dimension + 2:
        raise ValueError(f"image of {image.dim() - 2} spatial dims sampled at {dimension}-D coordinates")
    image, coordinates = _expand_batch(image, coordinates)
    if dimension == 1:
        zeros = torch.zeros_like(coordinates)
        out = sample(image[:, :, None], torch.cat([zeros[:, :, None], coordinates[:, :, None]], 1),
                     mode, padding_mode)
        return out[:, :, 0]
    return F.grid_sample(image, _as_grid(coordinates), mode=mode, padding_mode=padding_mode,
                         align_corners=True)


def warp(image: torch.Tensor, coordinates: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Warp an intensity image: ``(A o phi)(x) = A(phi(x))`` with linear interpolation."""
    return sample(image, coordinates, "bilinear", padding_mode)


def warp_labels(labels: torch.Tensor, coordinates: torch.Tensor, num_labels: int | None = None) -> torch.Tensor:
    """Warp an integer label map ``[B, 1, *S]``.

    Without ``num_labels``: nearest neighbour. With it: linear interpolation of the one-hot
    encoding followed by arg-max, which keeps thin structures smoother.
    """
    if num_labels is None:
        return sample(labels.float(), coordinates, "nearest", "zeros").round().to(labels.dtype)
    one_hot = F.one_hot(labels[:, 0].long(), num_labels).movedim(-1, 1).float()
    return sample(one_hot, coordinates, "bilinear", "zeros").argmax(1, keepdim=True).to(labels.dtype)


class Transform:
    """A spatial transform: a callable on coordinate maps.

    ``Transform(fn)`` wraps any function ``[B, D, *S] -> [B, D, *S]``. ``phi.field(shape)``
    samples it on the identity grid of ``shape``; ``phi @ psi`` is the composition
    ``x -> phi(psi(x))``; ``phi.select(index)`` is the transform of the batch elements ``index``
    (for the transforms that know their batch: displacement fields and their compositions).
    """

    def __init__(self, fn: CoordinateFn):
        self._fn = fn

    def __call__(self, coordinates: torch.Tensor) -> torch.Tensor:
        return self._fn(coordinates)

    def __matmul__(self, other: "Transform") -> "Transform":
        return compose(self, other)

    def field(self, shape: Sequence[int], like: torch.Tensor | None = None) -> torch.Tensor:
        """The coordinate map ``phi(identity)`` on a grid of ``shape``."""
        device = like.device if like is not None else None
        dtype = like.dtype if like is not None else torch.float32
        return self(identity_map(shape, device, dtype))

    def select(self, index: slice) -> "Transform":
        """The transform of batch elements ``index`` alone."""
        raise TypeError(f"{type(self).__name__} wraps a function and cannot select batch elements")


class DisplacementTransform(Transform):
    """``x -> x + u(x)`` for a displacement field ``u`` on a regular grid (``[B, D, *S]``, in [0, 1]
    units), interpolated linearly between grid points and clamped at the border (ICON's rule)."""

    def __init__(self, displacement: torch.Tensor):
        self.displacement = displacement
        super().__init__(lambda x: x + sample(displacement, x, "bilinear", "border"))

    def select(self, index: slice) -> Transform:
        return DisplacementTransform(self.displacement[index])


class ComposedTransform(Transform):
    """``outer o inner``: first ``inner``, then ``outer``."""

    def __init__(self, outer: Transform, inner: Transform):
        self.outer, self.inner = outer, inner
        super().__init__(lambda x: outer(inner(x)))

    def select(self, index: slice) -> Transform:
        return ComposedTransform(self.outer.select(index), self.inner.select(index))


def compose(phi: Transform, psi: Transform) -> Transform:
    """``phi o psi``: first ``psi``, then ``phi`` (``A o (phi o psi) = (A o phi) o psi``)."""
    return ComposedTransform(phi, psi)


def translation(offset: Sequence[float] | torch.Tensor) -> Transform:
    """``x -> x + offset``, with ``offset`` in [0, 1] units per axis (array-axis order)."""
    def fn(x: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(offset, dtype=x.dtype, device=x.device)
        return x + t.reshape(-1, *[1] * (x.dim() - 2)) if t.dim() == 1 else x + t
    return Transform(fn)


# --- unit conversions ------------------------------------------------------------------------

def voxel_grid(shape: Sequence[int]) -> np.ndarray:
    """The index of every voxel, ``[D, *shape]`` float64 in array-axis order: the numpy side's
    identity (in voxels, where :func:`identity_map` is in [0, 1] units)."""
    return np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"))


def voxel_scale(shape: Sequence[int]) -> np.ndarray:
    """Voxels per [0, 1] unit along each axis, ``N - 1`` (1 for an axis of one voxel, whose only
    voxel sits at 0), ``[D]`` float64: voxels = coordinates * scale."""
    return np.array([max(n - 1, 1) for n in shape], dtype=np.float64)


def inside(index: np.ndarray, shape: Sequence[int], tolerance: float = 0.0) -> np.ndarray:
    """Whether each point ``[..., D]`` (voxel indices, array-axis order) lies in an image of ``shape``,
    from voxel 0 to voxel ``N - 1`` of every axis give or take ``tolerance`` voxels; ``[...]`` bool."""
    index = np.asarray(index)
    outside = (index < -tolerance) | (index > np.asarray(shape) - 1 + tolerance)
    return ~outside.any(-1)


def _per_axis(values: Sequence[float] | torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=reference.dtype, device=reference.device)
    return t.reshape(1, -1, *[1] * (reference.dim() - 2))


def coordinates_to_voxels(coordinates: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """[0, 1] coordinates (or displacements) -> voxel units of a grid of ``shape``."""
    return coordinates * _per_axis(voxel_scale(shape), coordinates)


def voxels_to_coordinates(voxels: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Voxel units -> [0, 1] coordinates of a grid of ``shape``."""
    return voxels / _per_axis(voxel_scale(shape), voxels)


def map_points(transform: Transform, points: np.ndarray, fixed_shape: Sequence[int],
               moving_shape: Sequence[int], device: torch.device | None = None,
               what: str = "points") -> np.ndarray:
    """Points of the fixed image mapped by ``transform`` into the moving one, both as zero-based
    voxel indices in array-axis order, ``[B, K, D]`` for a transform of a batch of ``B`` pairs
    (evaluated at the points themselves, not interpolated from a sampled map). ``device``: where
    the transform's tensors live; ``what``: the points' name in errors."""
    points = np.asarray(points, dtype=np.float64)
    dimension = len(fixed_shape)
    if points.ndim != 3 or points.shape[2] != dimension:
        raise ValueError(f"{what} must be [B, K, {dimension}] voxel indices, got {points.shape}")
    outside = ~inside(points, fixed_shape)
    if outside.any():
        raise ValueError(f"{int(outside.sum())} {what} lie outside the image {tuple(fixed_shape)}")
    batch, count = points.shape[:2]
    # a [B, D, K, 1, ...] "grid" of the points
    query = voxels_to_coordinates(torch.from_numpy(points).permute(0, 2, 1).float(), fixed_shape)
    query = query.reshape(batch, dimension, count, *[1] * (dimension - 1))
    with torch.no_grad():
        mapped = transform(query.to(device)).reshape(batch, dimension, count)
    return coordinates_to_voxels(mapped.double().cpu(), moving_shape).permute(0, 2, 1).numpy()


def displacement_in_voxels(coordinate_map: torch.Tensor) -> torch.Tensor:
    """Displacement ``phi(x) - x`` in voxels of the grid ``coordinate_map`` is sampled on."""
    shape = coordinate_map.shape[2:]
    identity = identity_map(shape, coordinate_map.device, coordinate_map.dtype)
    return coordinates_to_voxels(coordinate_map - identity, shape)


def jacobian_determinant(coordinate_map: torch.Tensor) -> torch.Tensor:
    """Determinant of the Jacobian of ``phi`` in voxel units, by forward differences.

    Returns ``[B, *S']`` with each axis one shorter. 1 means volume-preserving; < 0 a fold.
    """
    dimension = coordinate_map.shape[1]
    voxels = coordinates_to_voxels(coordinate_map, coordinate_map.shape[2:])
    columns = []
    for axis in range(dimension):
        index = [slice(None), slice(None)] + [slice(0, -1)] * dimension
        index[2 + axis] = slice(None)
        columns.append(torch.diff(voxels, dim=2 + axis)[tuple(index)])
    jacobian = torch.stack(columns, dim=2)  # [B, component, derivative, *S']
    return torch.linalg.det(jacobian.movedim(1, -1).movedim(1, -1))

