"""Classical SimpleITK registration: it registers shifted and warped pairs, deterministically."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from baselines.classical import Classical, build
from equireg import methods
from equireg.metrics import dice
from equireg.transforms import displacement_in_voxels, warp

SHAPE = (64, 56)
VESSEL = 0.5  # threshold of the vessel mask: above the disc (0.3), below the vessels


def _vessel_image(shape, seed=0):
    """A bright disc crossed by thin smooth lines: a crude retina."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"))
    centre = np.array(shape, dtype=float) / 2
    radius = np.sqrt(sum(((grid[d] - centre[d]) / (0.35 * shape[d])) ** 2 for d in range(2)))
    image = 0.3 * (radius < 1)
    for _ in range(6):
        point = centre + rng.uniform(-0.3, 0.3, 2) * shape
        angle = rng.uniform(0, np.pi)
        distance = (grid[0] - point[0]) * np.sin(angle) - (grid[1] - point[1]) * np.cos(angle)
        image = image + 0.7 * np.exp(-distance ** 2 / (2 * 1.2 ** 2)) * (radius < 1)
    return ndimage.gaussian_filter(image, 1.0)


def _shift_and_warp(image, shift, seed=1, amplitude=2.0):
    """``image`` translated by ``shift`` voxels and deformed by a smooth random field."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in image.shape], indexing="ij"))
    coordinates = [grid[d] - shift[d] + amplitude * ndimage.zoom(rng.normal(size=(4, 4)),
                                                                 [n / 4 for n in image.shape], order=3)
                   for d in range(2)]
    return ndimage.map_coordinates(image, coordinates, order=1, mode="constant")


def _tensor(array):
    return torch.tensor(array, dtype=torch.float32)[None, None]


@pytest.fixture(scope="module")
def pair():
    fixed = _vessel_image(SHAPE)
    return _tensor(_shift_and_warp(fixed, (6.0, -4.0))), _tensor(fixed)


@pytest.mark.parametrize("deformable", ["bspline", "demons"])
def test_registers_a_shifted_and_warped_pair(pair, deformable):
    moving, fixed = pair
    phi = methods.build("classical", 2, deformable=deformable)(moving, fixed)
    moved = warp(moving, phi.field(SHAPE))
    before = dice(moving[0, 0] > VESSEL, fixed[0, 0] > VESSEL)
    after = dice(moved[0, 0] > VESSEL, fixed[0, 0] > VESSEL)
    assert before < 0.6, f"the test pair is too easy (Dice before {before:.3f})"
    assert after > 0.95, f"Dice {before:.3f} -> {after:.3f}"


def test_is_deterministic_and_registers_each_batch_element(pair):
    moving, fixed = pair
    net = build(2, sampling_percentage=0.5)
    first = net(torch.cat([moving, fixed]), torch.cat([fixed, fixed])).field(SHAPE)
    second = net(torch.cat([moving, fixed]), torch.cat([fixed, fixed])).field(SHAPE)
    assert torch.equal(first, second)
    shift = displacement_in_voxels(first)
    # pair 0 was shifted by (6, -4) (plus a zero-mean warp); pair 1 is already aligned
    assert torch.allclose(shift[0].mean((1, 2)), torch.tensor([6.0, -4.0]), atol=1.0), shift[0].mean((1, 2))
    assert shift[1].abs().max() < 0.1


def test_3d_translation_is_recovered():
    grid = np.stack(np.meshgrid(*[np.arange(20.0)] * 3, indexing="ij"))
    blob = lambda c: np.exp(-sum((grid[d] - c[d]) ** 2 / (2 * s ** 2) for d, s in enumerate((3, 4, 2.5))))
    fixed = blob((10, 9, 11)) + 0.5 * blob((6, 12, 8))
    moving = blob((12, 8, 10)) + 0.5 * blob((8, 11, 7))  # fixed shifted by (2, -1, -1)
    phi = build(3, deformable="none", shrink_factors=(2, 1), smoothing_sigmas=(1, 0))(_tensor(moving), _tensor(fixed))
    shift = displacement_in_voxels(phi.field((20, 20, 20)))[0].mean((1, 2, 3))
    assert torch.allclose(shift, torch.tensor([2.0, -1.0, -1.0]), atol=0.2), shift


def test_has_no_parameters_and_rejects_bad_options():
    assert list(Classical(2).parameters()) == []
    with pytest.raises(ValueError, match="metric"):
        build(2, metric="mutual")
    with pytest.raises(ValueError, match="deformable"):
        build(2, deformable="syn")
    with pytest.raises(ValueError, match="shrink_factors"):
        build(2, shrink_factors=(4, 2), smoothing_sigmas=(1,))
    with pytest.raises(ValueError, match="dimension"):
        build(4)
    with pytest.raises(ValueError, match="seed"):
        build(2, seed=0)
    with pytest.raises(ValueError, match=r"\[B, 1, \*spatial\]"):
        build(2)(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8))
