"""Warp-plus-shift perturbations of 2-D masks: CARL's retina experiment (CVPR 2025, section 5).

A pair is built from one vessel mask at full resolution (584x565 for DRIVE):

1. both images get ``pad`` zero rows/cols (200 rows in the paper: 784x565); the moving image's
   content sits at offset ``max(0, -shift)``, the fixed image's at ``max(0, shift)``, so the fixed
   content lies ``shift`` pixels further along each axis. The paper's "shifted" case is
   ``shift=(200, 0)``, "not shifted" ``(0, 0)``;
2. only the fixed image is warped: random-grid elastic deformations (``elasticdeform``, cubic, fill
   0), sigma 25 px on a 3x3 grid, then sigma 12 px on a 6x6 grid, the last optionally zoomed 0.8
   ("scaled"); the displacement arrays come from a seeded ``numpy`` Generator;
3. both images are average-pooled by ``pool`` (floor mode, like ``F.avg_pool2d``): 4 gives the
   paper's 196x141.

The ground-truth map is exact: ``elasticdeform`` output equals ``map_coordinates(image, T)`` for a
sampling map ``T``, and deforming the coordinate images with edge-clamped ("nearest") and mirrored
borders gives ``T = 2 * nearest - mirror`` everywhere, also where ``T`` leaves the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from scipy import ndimage

from equireg.transforms import voxel_grid, voxel_scale

PAPER_SHIFT = 200  # rows at 584x565, i.e. 50 px at the 196x141 training size
PAPER_PAD = (PAPER_SHIFT, 0)
WARP_STAGES: tuple[tuple[float, int], ...] = ((25.0, 3), (12.0, 6))  # (sigma px, grid points)
PAPER_ZOOM = 0.8
Condition = Literal["none", "shift", "shift_scale"]
CONDITIONS: dict[str, tuple[tuple[int, int], bool]] = {
    "none": ((0, 0), False),
    "shift": ((PAPER_SHIFT, 0), False),
    "shift_scale": ((PAPER_SHIFT, 0), True),
}


@dataclass(frozen=True)
class Pair:
    """One registration pair at the pooled size (``float32``).

    ``moving``/``fixed`` are the images, ``moving_label``/``fixed_label`` binary vessel masks
    warped with them; ``coordinates`` (``[2, rows, cols]`` or ``None``) maps every fixed pixel to
    the moving image's [0, 1] coordinates (equireg's convention: ``moving o phi = fixed``).
    """

    moving: np.ndarray
    fixed: np.ndarray
    moving_label: np.ndarray
    fixed_label: np.ndarray
    coordinates: np.ndarray | None = None


@dataclass(frozen=True)
class PairSet:
    """Many pairs stacked as ``[N, 1, rows, cols]`` (``coordinates``: ``[N, 2, rows, cols]``)."""

    moving: np.ndarray
    fixed: np.ndarray
    moving_label: np.ndarray
    fixed_label: np.ndarray
    coordinates: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.moving)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays by name, e.g. for :func:`equireg.data.datasets.save_arrays`."""
        names = ("moving", "fixed", "moving_label", "fixed_label", "coordinates")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    @classmethod
    def stack(cls, pairs: Sequence[Pair]) -> "PairSet":
        """Stack pairs into ``[N, 1, rows, cols]`` arrays (maps kept only if every pair has one)."""
        coordinates = None if any(p.coordinates is None for p in pairs) else np.stack([p.coordinates for p in pairs])
        return cls(*[np.stack([getattr(p, name) for p in pairs])[:, None]
                     for name in ("moving", "fixed", "moving_label", "fixed_label")], coordinates)


def _sampling_map(shape: tuple[int, int], displacement: np.ndarray, zoom: float | None) -> np.ndarray:
    """The map ``T`` (``[2, *shape]``, pixels) with ``deform_grid(x) = map_coordinates(x, T)``."""
    import elasticdeform

    grid = voxel_grid(shape)
    clamped_0, clamped_1, mirrored_0, mirrored_1 = elasticdeform.deform_grid(
        [grid[0], grid[1], grid[0], grid[1]], displacement, order=1,
        mode=["nearest", "nearest", "mirror", "mirror"], zoom=zoom)
    sampling = np.stack([2 * clamped_0 - mirrored_0, 2 * clamped_1 - mirrored_1])
    # Mirroring is only unambiguous within one image length beyond the border.
    for axis, n in enumerate(shape):
        if sampling[axis].min() < -(n - 1) or sampling[axis].max() > 2 * (n - 1):
            raise ValueError(f"warp displacement too large for a {shape} image along axis {axis}")
    return sampling


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``outer(inner(y))`` for sampling maps on one grid; ``outer`` is smooth, so its displacement is
    interpolated with cubic splines (clamped beyond the border, where the image is fill anyway)."""
    identity = voxel_grid(outer.shape[1:])
    return np.stack([inner[a] + ndimage.map_coordinates(outer[a] - identity[a], inner, order=3,
                                                         mode="nearest") for a in range(len(outer))])


def _pool(image: np.ndarray, factor: int) -> np.ndarray:
    """Average pooling with floor mode (drops incomplete tail rows/cols, like ``F.avg_pool2d``)."""
    rows, cols = image.shape[0] // factor, image.shape[1] // factor
    if rows < 2 or cols < 2:
        raise ValueError(f"pool factor {factor} leaves fewer than 2 pixels of {image.shape}")
    return image[:rows * factor, :cols * factor].reshape(rows, factor, cols, factor).mean(axis=(1, 3))


def _resolve_shift(shifted: bool | None, shift: Sequence[int] | None) -> tuple[int, int]:
    if shifted is not None and shift is not None:
        raise ValueError("make_pair: give either shifted or shift, not both")
    if shift is None:
        return (PAPER_SHIFT, 0) if shifted else (0, 0)
    if len(shift) != 2:
        raise ValueError(f"make_pair: shift must be (rows, cols), got {shift!r}")
    return int(shift[0]), int(shift[1])


def make_pair(
    mask: np.ndarray,
    *,
    shifted: bool | None = None,
    shift: Sequence[int] | None = None,
    scaled: bool = False,
    seed: int | Sequence[int],
    pool: int = 4,
    pad: Sequence[int] = PAPER_PAD,
    stages: Sequence[tuple[float, int]] = WARP_STAGES,
    zoom: float = PAPER_ZOOM,
    invert: bool = False,
    label_threshold: float = 0.3,
    with_map: bool = True,
) -> Pair:
    """Build one pair from a full-resolution vessel mask (see the module docstring).

    ``shifted`` (paper: 200 rows) or ``shift=(rows, cols)`` in full-resolution pixels, each at most
    ``pad`` along its axis. ``stages`` lists the elastic warps as ``(sigma, points)``; ``()`` gives an
    unwarped pair. ``scaled`` zooms the last stage by ``zoom``. The image is the mask itself, or
    ``1 - mask`` inside the content rectangle with ``invert`` (how upstream stored DRIVE); labels are
    always the vessels: pooled mask ``>= label_threshold``. ``with_map`` adds the exact ground-truth
    coordinate map (it costs about as much as the warp). The same ``seed`` gives the same warp
    whatever the shift, so shift sweeps differ in the shift only.
    """
    mask = np.asarray(mask, dtype=np.float64)
    if mask.ndim != 2:
        raise ValueError(f"make_pair: mask must be 2-D, got shape {mask.shape}")
    dy, dx = _resolve_shift(shifted, shift)
    pad_rows, pad_cols = (int(p) for p in pad)
    if abs(dy) > pad_rows or abs(dx) > pad_cols:
        raise ValueError(f"make_pair: shift {(dy, dx)} exceeds pad {(pad_rows, pad_cols)}")
    if pool < 1:
        raise ValueError(f"make_pair: pool must be >= 1, got {pool}")
    if scaled and not stages:
        raise ValueError("make_pair: scaled needs at least one warp stage")
    rows, cols = mask.shape
    canvas = (rows + pad_rows, cols + pad_cols)
    content = np.ones_like(mask) - mask if invert else mask

    def place(image: np.ndarray, offset: tuple[int, int]) -> np.ndarray:
        out = np.zeros(canvas)
        out[offset[0]:offset[0] + rows, offset[1]:offset[1] + cols] = image
        return out

    moving_offset = (max(0, -dy), max(0, -dx))
    fixed_offset = (max(0, dy), max(0, dx))
    fixed_image, fixed_mask = place(content, fixed_offset), place(mask, fixed_offset)

    import elasticdeform

    rng = np.random.default_rng(seed)
    sampling = None
    for k, (sigma, points) in enumerate(stages):
        displacement = rng.standard_normal((2, int(points), int(points))) * float(sigma)
        stage_zoom = zoom if scaled and k == len(stages) - 1 else None
        fixed_image, fixed_mask = elasticdeform.deform_grid(
            [fixed_image, fixed_mask], displacement, order=3, mode="constant", cval=0.0, zoom=stage_zoom)
        if with_map:
            stage = _sampling_map(canvas, displacement, stage_zoom)
            sampling = stage if sampling is None else _compose(sampling, stage)

    moving = _pool(place(content, moving_offset), pool)
    moving_label = _pool(place(mask, moving_offset), pool) >= label_threshold
    # Cubic splines overshoot near edges; keep intensities in [0, 1] so thresholds mean the same
    # thing on both images.
    fixed = _pool(np.clip(fixed_image, 0.0, 1.0), pool)
    fixed_label = _pool(np.clip(fixed_mask, 0.0, 1.0), pool) >= label_threshold

    coordinates = None
    if with_map:
        coordinates = _pooled_coordinates(sampling, canvas, pool, (dy, dx), fixed.shape)
    return Pair(moving.astype(np.float32), fixed.astype(np.float32), moving_label.astype(np.float32),
                fixed_label.astype(np.float32), coordinates)


def _pooled_coordinates(sampling: np.ndarray | None, canvas: tuple[int, int], pool: int,
                        shift: tuple[int, int], pooled_shape: tuple[int, int]) -> np.ndarray:
    """Fixed pooled grid -> moving pooled [0, 1] coordinates.

    Pooled pixel ``i`` averages full-resolution pixels ``pool*i .. pool*i + pool-1``, so it sits at
    ``pool*i + (pool-1)/2``; the fixed content equals the moving content moved by ``shift``.
    """
    centre = (pool - 1) / 2
    points = np.stack(np.meshgrid(*[pool * np.arange(n, dtype=np.float64) + centre for n in pooled_shape],
                                  indexing="ij"))
    if sampling is None:
        full = points
    else:
        identity = voxel_grid(canvas)
        full = np.stack([points[a] + ndimage.map_coordinates(sampling[a] - identity[a], points, order=3,
                                                             mode="nearest") for a in range(2)])
    scale = voxel_scale(pooled_shape)
    moving = [(full[a] - shift[a] - centre) / pool / scale[a] for a in range(2)]
    return np.stack(moving).astype(np.float32)


def shift_sweep_pairs(
    mask: np.ndarray,
    shifts: Sequence[Sequence[int]],
    *,
    seed: int | Sequence[int],
    pad: Sequence[int] | None = None,
    **options,
) -> list[Pair]:
    """Pairs that differ only in the shift (same warp, same canvas), for a shift sweep.

    ``shifts`` are ``(rows, cols)`` in full-resolution pixels, either sign. The canvas pad defaults
    to the paper's 200 rows, widened to the largest shift on each axis, so every pair has one shape.
    ``options`` go to :func:`make_pair`.
    """
    shifts = [(int(s[0]), int(s[1])) for s in shifts]
    if not shifts:
        raise ValueError("shift_sweep_pairs: no shifts given")
    if pad is None:
        pad = (max([PAPER_PAD[0]] + [abs(s[0]) for s in shifts]),
               max([PAPER_PAD[1]] + [abs(s[1]) for s in shifts]))
    return [make_pair(mask, shift=s, seed=seed, pad=pad, **options) for s in shifts]


def retina_dataset(
    masks: Sequence[np.ndarray],
    condition: Condition,
    warps_per_image: int,
    seed: int,
    pool: int = 4,
    flip: bool = True,
    with_map: bool = False,
    **options,
) -> PairSet:
    """The paper's train/test sets: every mask (and, with ``flip``, its upside-down copy) paired
    ``warps_per_image`` times under ``condition`` ("none", "shift" or "shift_scale"). 17 masks x 2 x 20
    gives the 680 training pairs, 3 x 2 x 20 the 120 test pairs. Pair ``k`` uses warp ``k // M`` of
    image ``k % M`` (upstream's order) with the seed ``(seed, k)``. Training needs no ground-truth
    maps, so ``with_map`` is off by default; ``options`` go to :func:`make_pair` (``invert``, ...)."""
    if condition not in CONDITIONS:
        raise ValueError(f"retina_dataset: condition must be one of {sorted(CONDITIONS)}, got {condition!r}")
    if warps_per_image < 1 or not len(masks):
        raise ValueError("retina_dataset: need at least one mask and one warp per image")
    shift, scaled = CONDITIONS[condition]
    images = list(masks) + ([np.flipud(m) for m in masks] if flip else [])
    pairs = [make_pair(images[k % len(images)], shift=shift, scaled=scaled, seed=(seed, k), pool=pool,
                       with_map=with_map, **options) for k in range(warps_per_image * len(images))]
    return PairSet.stack(pairs)
