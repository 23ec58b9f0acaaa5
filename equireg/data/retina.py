"""Retinal vessel masks: a procedural DRIVE-like generator and a vessel map of a real fundus photo.

DRIVE (Staal 2004) cannot be redistributed, so the default workflow registers vessel masks drawn by
:func:`generate_vessel_mask`; :func:`skimage_retina_vessels` gives one real vessel map from the
fundus photograph bundled with scikit-image, and :mod:`equireg.data.loaders` reads DRIVE itself.
Masks are ``float32`` arrays of shape ``(rows, cols)`` with vessels = 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from equireg.data.trees import render_tubes

DRIVE_SHAPE = (584, 565)
_FOV_RADIUS = 0.475  # of min(shape): DRIVE's field of view is ~540 px wide in a 565 px frame
_DISC_DIAMETER = 80.0  # optic disc, px at DRIVE scale
_MIN_WIDTH = 1.0  # vessels end when thinner than this, px at DRIVE scale


def fov_mask(shape: Sequence[int] = DRIVE_SHAPE) -> np.ndarray:
    """The circular field of view of a DRIVE-like image (bool)."""
    rows, cols = shape
    y, x = np.ogrid[:rows, :cols]
    radius = _FOV_RADIUS * min(rows, cols)
    return (y - (rows - 1) / 2) ** 2 + (x - (cols - 1) / 2) ** 2 <= radius ** 2


@dataclass
class _Vessel:
    """A growing vessel: position, heading angle (0 = +cols, pi/2 = +rows), width, budgets."""

    y: float
    x: float
    heading: float
    width: float
    length_left: float
    to_branch: float
    waypoints: list[tuple[float, float]]
    preferred: float  # heading it keeps drifting back to when it has no waypoints


def _angle_difference(a: float, b: float) -> float:
    return (a - b + math.pi) % (2 * math.pi) - math.pi


class _RetinaGrower:
    """Grows the trees of one mask. All randomness comes from one seeded Generator, in a fixed
    order, so a seed always gives the same bytes."""

    def __init__(self, seed: int, shape: Sequence[int]):
        self.rng = np.random.default_rng(seed)
        self.rows, self.cols = int(shape[0]), int(shape[1])
        self.scale = min(self.rows, self.cols) / min(DRIVE_SHAPE)
        self.centre = ((self.rows - 1) / 2, (self.cols - 1) / 2)
        self.radius = _FOV_RADIUS * min(self.rows, self.cols)
        rng, r = self.rng, self.radius
        # Optic disc left or right of centre; the fovea lies ~2.5 disc diameters temporal of it.
        self.side = 1.0 if rng.random() < 0.5 else -1.0
        self.disc = (self.centre[0] + rng.uniform(-0.12, 0.12) * r,
                     self.centre[1] + self.side * rng.uniform(0.5, 0.65) * r)
        self.fovea = (self.disc[0] + rng.uniform(-0.02, 0.1) * r,
                      self.disc[1] - self.side * rng.uniform(0.7, 0.85) * r)
        self.temporal = 0.0 if self.side < 0 else math.pi
        self.points: list[tuple[float, float, float]] = []

    def _direction(self, heading_from_temporal: float, superior: bool, nasal: bool = False) -> float:
        """Heading at ``heading_from_temporal`` radians from the temporal (or nasal) direction,
        turned up (superior) or down."""
        base = self.temporal + (math.pi if nasal else 0.0)
        turn = heading_from_temporal * (1.0 if superior else -1.0) * (-1.0 if nasal else 1.0)
        return base + self.side * turn

    def trunks(self) -> list[_Vessel]:
        """Main vessels leaving the disc: four arcade vessels (an artery and a vein above and
        below the fovea), nasal vessels and thin papillomacular ones."""
        rng, s, r = self.rng, self.scale, self.radius
        vessels = []
        for superior in (True, False):
            sign = -1.0 if superior else 1.0
            for width, reach in ((rng.uniform(6.5, 8.0), rng.uniform(0.5, 0.7) * r),
                                 (rng.uniform(5.0, 6.5), rng.uniform(0.3, 0.5) * r)):
                # Arcades (a vein, an artery) pass above/below the fovea, then run temporally.
                waypoints = [
                    (self.fovea[0] + sign * reach, self.fovea[1]),
                    (self.fovea[0] + sign * reach * rng.uniform(0.9, 1.4),
                     self.fovea[1] - self.side * rng.uniform(0.5, 0.8) * r),
                ]
                heading = self._direction(rng.uniform(1.1, 1.45), superior)
                vessels.append(self._vessel(heading, width * s, rng.uniform(1.6, 2.2) * r, waypoints))
        for _ in range(int(rng.integers(2, 5))):
            heading = self._direction(rng.uniform(0.1, 1.4), bool(rng.random() < 0.5), nasal=True)
            vessels.append(self._vessel(heading, rng.uniform(3.5, 6.0) * s, rng.uniform(0.6, 1.2) * r))
        for _ in range(int(rng.integers(1, 4))):
            heading = self._direction(rng.uniform(-0.35, 0.35), True)
            vessels.append(self._vessel(heading, rng.uniform(2.0, 3.5) * s, rng.uniform(0.4, 0.8) * r))
        return vessels

    def _vessel(self, heading: float, width: float, length: float,
                waypoints: list[tuple[float, float]] | None = None) -> _Vessel:
        """A trunk, starting somewhere in the central part of the disc."""
        rng = self.rng
        angle, dist = rng.uniform(0, 2 * math.pi), rng.uniform(0, 0.25) * _DISC_DIAMETER * self.scale
        return _Vessel(self.disc[0] + dist * math.sin(angle), self.disc[1] + dist * math.cos(angle),
                       heading, width, length, self._branch_interval(width), list(waypoints or []), heading)

    def _branch_interval(self, width: float) -> float:
        return self.rng.uniform(35.0, 90.0) * self.scale * (1.0 + 0.08 * width / self.scale)

    def _desired_heading(self, v: _Vessel) -> float:
        if v.waypoints:
            ty, tx = v.waypoints[0]
            return math.atan2(ty - v.y, tx - v.x)
        # Keep the own course, drift away from the disc, and stay out of the avascular fovea.
        dy, dx = math.sin(v.preferred) * 2.0, math.cos(v.preferred) * 2.0
        ry, rx = v.y - self.disc[0], v.x - self.disc[1]
        norm = math.hypot(ry, rx) + 1e-6
        dy, dx = dy + ry / norm, dx + rx / norm
        fy, fx = v.y - self.fovea[0], v.x - self.fovea[1]
        fd = math.hypot(fy, fx) + 1e-6
        push = 2.5 * math.exp(-fd / (0.25 * self.radius))
        return math.atan2(dy + push * fy / fd, dx + push * fx / fd)

    def grow(self, v: _Vessel, queue: list[_Vessel]) -> None:
        rng, s = self.rng, self.scale
        step = 1.0  # px; consecutive samples then form an 8-connected chain
        turn_rate = 0.0
        # Tortuosity: the turn rate is a slowly varying random process (thin vessels wiggle more).
        wiggle = 0.006 + 0.01 / (1.0 + v.width / s)
        while v.length_left > 0 and v.width >= _MIN_WIDTH * s:
            if math.hypot(v.y - self.centre[0], v.x - self.centre[1]) > self.radius + 2:
                return
            if math.hypot(v.y - self.fovea[0], v.x - self.fovea[1]) < 0.1 * self.radius:
                return
            if v.waypoints and math.hypot(v.waypoints[0][0] - v.y, v.waypoints[0][1] - v.x) < 0.15 * self.radius:
                v.waypoints.pop(0)
                v.preferred = v.heading
            self.points.append((v.y, v.x, v.width / 2))
            turn_rate = 0.93 * turn_rate + rng.normal(0.0, wiggle)
            gain = 0.015 if v.waypoints else 0.04
            v.heading += turn_rate + gain * _angle_difference(self._desired_heading(v), v.heading)
            v.y += step * math.sin(v.heading)
            v.x += step * math.cos(v.heading)
            v.width *= 1.0 - 0.0015
            v.length_left -= step
            v.to_branch -= step
            if v.to_branch <= 0:
                self._branch(v, queue)

    def _branch(self, v: _Vessel, queue: list[_Vessel]) -> None:
        rng = self.rng
        v.to_branch = self._branch_interval(v.width)
        symmetric = rng.random() < 0.12
        if symmetric or v.width < 3.0 * self.scale:  # small vessels split more evenly
            ratio = rng.uniform(0.65, 0.85)
        else:
            ratio = rng.uniform(0.35, 0.65)
        child_width = v.width * ratio
        if child_width < _MIN_WIDTH * self.scale:
            return
        # Murray's law: parent^3 = child^3 + continuing^3.
        v.width = max(v.width ** 3 - child_width ** 3, 0.0) ** (1.0 / 3.0)
        turn = (1.0 if rng.random() < 0.5 else -1.0) * rng.uniform(0.55, 1.2)
        v.heading -= 0.25 * turn * ratio ** 2
        length = rng.uniform(0.4, 1.0) * self.radius * (0.5 + ratio)
        queue.append(_Vessel(v.y, v.x, v.heading + turn, child_width, length,
                             self._branch_interval(child_width), [], v.heading + turn))

    def render(self) -> np.ndarray:
        queue = self.trunks()
        while queue and len(self.points) < 60000:
            self.grow(queue.pop(0), queue)
        points = np.asarray(self.points, dtype=np.float64)
        mask = render_tubes(points[:, :2], points[:, 2], (self.rows, self.cols))
        return (mask & fov_mask((self.rows, self.cols))).astype(np.float32)


def generate_vessel_mask(seed: int, shape: Sequence[int] = DRIVE_SHAPE) -> np.ndarray:
    """A DRIVE-like retinal vessel mask (``float32``, vessels = 1), reproducible from ``seed``.

    Branching trees leave an optic disc placed left or right of centre: arcade vessels curve
    around the fovea, thinner nasal and macular vessels radiate outwards; widths taper and split
    by Murray's law at branch points; headings follow a smooth random turn rate (tortuosity);
    everything is clipped to the circular field of view.
    """
    if len(shape) != 2 or min(shape) < 32:
        raise ValueError(f"generate_vessel_mask: shape must be 2-D with sides >= 32, got {tuple(shape)}")
    return _RetinaGrower(int(seed), shape).render()


def skimage_retina_vessels(shape: Sequence[int] = DRIVE_SHAPE) -> np.ndarray:
    """Vessel map (``float32``, vessels = 1) of scikit-image's bundled fundus photograph.

    The green channel (best vessel contrast) is scaled so its field of view matches DRIVE's,
    filtered with Frangi's vesselness for dark ridges, thresholded inside the eroded field of view
    at the quantile that gives a DRIVE-like vessel fraction (12 %), cleaned of specks, and centred
    in a frame of ``shape``.
    """
    from skimage import data, filters, morphology, transform

    rgb = data.retina()
    fov = rgb[..., 0] > 20
    rows, cols = np.nonzero(fov)
    crop = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    diameter = int(round(2 * _FOV_RADIUS * min(shape)))
    green = transform.resize(rgb[crop][..., 1] / 255.0, (diameter, diameter), anti_aliasing=True)
    inside = transform.resize(fov[crop].astype(float), (diameter, diameter)) > 0.5
    inside = ndimage.binary_erosion(inside, iterations=6)
    vesselness = filters.frangi(green, sigmas=(1.0, 1.5, 2.0, 3.0, 4.0), black_ridges=True)
    threshold = np.quantile(vesselness[inside], 1.0 - 0.12)
    vessels = morphology.remove_small_objects((vesselness > threshold) & inside, max_size=40)

    out = np.zeros(tuple(shape), dtype=np.float32)
    top, left = (shape[0] - diameter) // 2, (shape[1] - diameter) // 2
    out[top:top + diameter, left:left + diameter] = vessels
    return out


def vessel_statistics(mask: np.ndarray) -> dict[str, float]:
    """Summary numbers of a vessel mask: ``vessel_fraction`` (of all pixels), ``branch_points``
    and ``end_points`` of the skeleton, ``components`` (8-connected) and
    ``largest_component_fraction`` (of vessel pixels)."""
    from skimage.morphology import skeletonize

    vessels = np.asarray(mask) > 0.5
    if vessels.ndim != 2:
        raise ValueError(f"vessel_statistics: expected a 2-D mask, got shape {vessels.shape}")
    eight = np.ones((3, 3), dtype=int)
    labels, components = ndimage.label(vessels, structure=eight)
    sizes = np.bincount(labels.ravel())[1:]
    skeleton = skeletonize(vessels)
    neighbours = ndimage.convolve(skeleton.astype(int), eight, mode="constant") - skeleton
    junctions = skeleton & (neighbours >= 3)
    _, branch_points = ndimage.label(junctions, structure=eight)  # a junction spans a few pixels
    return {
        "vessel_fraction": float(vessels.mean()),
        "branch_points": float(branch_points),
        "end_points": float(np.count_nonzero(skeleton & (neighbours == 1))),
        "components": float(components),
        "largest_component_fraction": float(sizes.max() / sizes.sum()) if components else 0.0,
    }


def plot_vessel_masks(masks: Sequence[np.ndarray], titles: Sequence[str] | None = None):
    """A row of vessel masks as one matplotlib Figure."""
    import matplotlib.pyplot as plt

    count = len(masks)
    if count == 0:
        raise ValueError("plot_vessel_masks: no masks given")
    figure, axes = plt.subplots(1, count, figsize=(2.6 * count, 2.8), squeeze=False)
    for k, (ax, mask) in enumerate(zip(axes[0], masks)):
        ax.imshow(mask, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[k], fontsize=9)
        ax.axis("off")
    figure.tight_layout()
    return figure
