"""Analytic checks of the coordinate convention, warping, composition and conversions."""

import pytest
import torch

from equireg import transforms as T
from equireg.wrappers import Downsample, DisplacementField, TwoStep


def _textured(shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, 1, *shape, generator=generator)


@pytest.mark.parametrize("shape", [(7,), (6, 9), (5, 6, 7)])
def test_identity_warp_returns_image(shape):
    image = _textured(shape)
    warped = T.warp(image, T.identity_map(shape))
    torch.testing.assert_close(warped, image, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape,shift", [((12, 10), (2, -3)), ((8, 9, 10), (1, 2, -1))])
def test_integer_translation_warps_exactly(shape, shift):
    image = _textured(shape)
    offset = T.voxels_to_coordinates(torch.tensor(shift, dtype=torch.float32)[None, :, *[None] * len(shape)],
                                      shape)[0, :, *[0] * len(shape)]
    warped = T.warp(image, T.translation(offset)(T.identity_map(shape)))
    # (A o phi)(x) = A(x + shift): compare on the region that stays inside the frame.
    inside = tuple(slice(max(0, -s), n - max(0, s)) for n, s in zip(shape, shift))
    source = tuple(slice(max(0, s), n + min(0, s)) for n, s in zip(shape, shift))
    torch.testing.assert_close(warped[(0, 0) + inside], image[(0, 0) + source], atol=1e-5, rtol=0)


def test_composing_translations_adds_them():
    shape = (9, 11)
    a, b = T.translation([0.1, -0.05]), T.translation([0.02, 0.2])
    composed = (a @ b).field(shape)
    expected = T.translation([0.12, 0.15]).field(shape)
    torch.testing.assert_close(composed, expected)


def test_composition_applies_the_right_map_first():
    """``phi @ psi`` is ``x -> phi(psi(x))``: with maps that do not commute (a contraction sampled on a
    grid and a translation) the order shows, and a swapped composition fails."""
    shape = (11, 9)
    identity = T.identity_map(shape)
    contraction = T.DisplacementTransform(-0.2 * (identity - 0.5))  # x -> 0.5 + 0.8 (x - 0.5), exact bilinearly
    shift = T.translation([0.05, 0.0])
    inner = identity[(slice(None), slice(None), slice(2, -2), slice(2, -2))]  # away from the clamped border
    expected = 0.5 + 0.8 * (inner + torch.tensor([0.05, 0.0]).reshape(1, 2, 1, 1) - 0.5)
    torch.testing.assert_close((contraction @ shift)(inner), expected, atol=1e-6, rtol=0)
    swapped = (shift @ contraction)(inner)
    assert (swapped - expected).abs().max() > 5e-3  # 0.2 x 0.05 apart along the rows


def test_displacement_transform_interpolates_and_composes():
    shape = (6, 6)
    displacement = torch.full((1, 2, *shape), 0.1)
    phi = T.DisplacementTransform(displacement)
    torch.testing.assert_close(phi.field(shape), T.identity_map(shape) + 0.1)
    torch.testing.assert_close((phi @ phi).field(shape), T.identity_map(shape) + 0.2)


def test_select_keeps_the_chosen_batch_elements_of_a_composition():
    shape = (5, 6)
    generator = torch.Generator().manual_seed(0)
    first, second = (0.05 * torch.randn(4, 2, *shape, generator=generator) for _ in range(2))
    phi = T.DisplacementTransform(first) @ T.DisplacementTransform(second)
    points = T.identity_map(shape) + 0.02 * torch.randn(1, 2, *shape, generator=generator)
    for index in (slice(0, 2), slice(2, None)):
        alone = T.DisplacementTransform(first[index]) @ T.DisplacementTransform(second[index])
        assert torch.equal(phi.select(index)(points), alone(points))
        assert torch.equal(phi.select(index)(points), phi(points)[index])
    with pytest.raises(TypeError, match="cannot select"):
        T.translation([0.1, 0.0]).select(slice(0, 1))


def test_label_warp_keeps_labels():
    labels = torch.zeros(1, 1, 10, 10, dtype=torch.long)
    labels[0, 0, 2:5, 3:7] = 2
    labels[0, 0, 6:9, 1:4] = 1
    shift = T.translation([1 / 9, 0]).field((10, 10))
    nearest = T.warp_labels(labels, shift)
    one_hot = T.warp_labels(labels, shift, num_labels=3)
    expected = torch.zeros_like(labels)
    expected[0, 0, 1:4, 3:7] = 2
    expected[0, 0, 5:8, 1:4] = 1
    assert torch.equal(nearest, expected)
    assert torch.equal(one_hot, expected)


def test_jacobian_of_identity_is_one_and_flip_is_negative():
    identity = T.identity_map((6, 7, 8))
    torch.testing.assert_close(T.jacobian_determinant(identity), torch.ones(1, 5, 6, 7))
    flipped = identity.clone()
    flipped[:, 0] = 1 - flipped[:, 0]
    assert (T.jacobian_determinant(flipped) < 0).all()


class _Shift(torch.nn.Module):
    """A displacement net that returns a constant displacement."""

    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, moving, fixed):
        return torch.full((moving.shape[0], moving.dim() - 2, *moving.shape[2:]), self.value)


def test_two_step_composes_and_downsample_halves():
    net = TwoStep(Downsample(DisplacementField(_Shift(0.05))), DisplacementField(_Shift(0.02)))
    image = _textured((16, 16))
    phi = net(image, image)
    torch.testing.assert_close(phi.field((16, 16)), T.identity_map((16, 16)) + 0.07)


def test_numpy_voxel_grid_is_the_identity_map_in_voxels():
    shape = (5, 1, 7)  # an axis of one voxel: its only voxel sits at 0, its scale is 1
    grid, scale = T.voxel_grid(shape), T.voxel_scale(shape)
    assert grid.shape == (3, *shape) and list(scale) == [4.0, 1.0, 6.0]
    torch.testing.assert_close(torch.from_numpy(grid / scale.reshape(-1, 1, 1, 1)).float(), T.identity_map(shape)[0])
    voxels = torch.from_numpy(grid)[None]
    torch.testing.assert_close(T.voxels_to_coordinates(voxels, shape), T.identity_map(shape, dtype=torch.float64))
    torch.testing.assert_close(T.coordinates_to_voxels(T.voxels_to_coordinates(voxels, shape), shape), voxels)
