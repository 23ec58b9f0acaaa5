"""Analytic checks of the shared metrics."""

import numpy as np
import pytest
import torch

from equireg import metrics
from equireg.transforms import identity_map, translation, voxels_to_coordinates


def test_dice_of_equal_labels_is_one_and_disjoint_is_zero():
    labels = np.zeros((10, 10), int)
    labels[2:5, 2:5], labels[6:9, 6:9] = 1, 2
    assert metrics.dice_per_label(labels, labels) == {1: 1.0, 2: 1.0}
    assert metrics.dice(labels == 1, labels == 2) == 0.0
    half = labels.copy()
    half[2:5, 2:5] = 0
    half[2:5, 2:4] = 1
    assert metrics.dice(half == 1, labels == 1) == pytest.approx(2 * 6 / (6 + 9))


def test_dice_rejects_empty_label_map_and_shape_mismatch():
    with pytest.raises(ValueError, match="no foreground"):
        metrics.dice_per_label(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="shapes"):
        metrics.dice(np.zeros((4, 4)), np.zeros((4, 5)))


def test_tre_of_known_shift_is_shift_times_spacing():
    shape, spacing = (20, 30, 40), (2.5, 0.7, 0.7)
    rng = np.random.default_rng(0)
    fixed = rng.uniform(5, 15, size=(50, 3))
    moving = fixed + np.array([1.0, 2.0, -2.0])
    expected = np.linalg.norm(np.array([1.0, 2.0, -2.0]) * spacing)
    np.testing.assert_allclose(metrics.point_errors_mm(fixed, moving, spacing), expected)
    # The exact transform gives zero error; the identity gives the shift.
    offset = voxels_to_coordinates(torch.tensor([1.0, 2.0, -2.0])[None, :, None, None, None], shape)
    exact = translation(offset.flatten())
    np.testing.assert_allclose(metrics.landmark_errors_mm(exact, fixed, moving, shape, shape, spacing), 0, atol=1e-4)
    identity = translation([0.0, 0.0, 0.0])
    np.testing.assert_allclose(metrics.landmark_errors_mm(identity, fixed, moving, shape, shape, spacing),
                               expected, atol=1e-4)


def test_points_are_mapped_by_the_transform_itself_per_pair_of_a_batch():
    from equireg.transforms import DisplacementTransform, Transform, map_points

    shape = (12, 16)
    amplitude = torch.tensor([0.03, -0.05]).reshape(2, 1, 1, 1)  # a different warp per pair

    def wave(x):  # smooth, non-linear: linear interpolation of its sampled map is not exact
        return x + amplitude * torch.sin(2 * np.pi * x.flip(1))

    points = np.random.default_rng(1).uniform(0, 11, size=(2, 30, 2))
    coordinates = points / (np.array(shape) - 1)
    expected = (coordinates + amplitude.numpy().reshape(2, 1, 1) * np.sin(2 * np.pi * coordinates[..., ::-1]))
    expected *= np.array(shape) - 1
    mapped = map_points(Transform(wave), points, shape, shape)
    # float32 coordinates times at most 15 voxels per unit
    np.testing.assert_allclose(mapped, expected, atol=1e-5)
    # what sampling the map on the grid and interpolating it would have given instead
    sampled = DisplacementTransform(Transform(wave).field(shape) - identity_map(shape))
    assert np.abs(map_points(sampled, points, shape, shape) - expected).max() > 1e-2


def test_landmarks_outside_the_image_are_rejected():
    with pytest.raises(ValueError, match="outside"):
        metrics.landmark_errors_mm(translation([0.0, 0.0]), np.array([[0.0, 50.0]]), np.array([[0.0, 1.0]]),
                                   (10, 10), (10, 10), (1.0, 1.0))


def test_fold_percentage():
    identity = identity_map((8, 8))
    assert metrics.fold_percentage(identity) == 0.0
    folded = identity.clone()
    folded[:, 1, :, 4:] = 1.5 - folded[:, 1, :, 4:]
    assert 0 < metrics.fold_percentage(folded) < 100


def test_hd95_sdlogj_and_dsc30_on_known_answers():
    from equireg.transforms import identity_map

    square = np.zeros((40, 40), bool)
    square[10:30, 10:30] = True
    moved = np.roll(square, 3, axis=0)
    assert metrics.hd95(square, square) == 0.0
    assert metrics.hd95(moved, square) == pytest.approx(3.0)  # every surface point is at most 3 rows away
    assert metrics.hd95(moved, square, spacing=(2.0, 1.0)) == pytest.approx(6.0)
    assert np.isnan(metrics.hd95(np.zeros_like(square), square))
    identity = identity_map((16, 12))
    assert metrics.sd_log_jacobian(identity) == pytest.approx(0.0, abs=1e-5)  # float32 grid: ~1e-7 round-off
    stretched = identity.clone()
    stretched[:, 0] = stretched[:, 0] ** 2  # Jacobian varies along the rows: a spread of log-determinants
    assert metrics.sd_log_jacobian(stretched) > 0.1
    assert metrics.dsc30([0.9, 0.1, 0.8, 0.2, 0.7, 0.6, 0.5, 0.4, 0.3, 1.0]) == pytest.approx(0.2)
    assert metrics.dsc30([0.5]) == 0.5
