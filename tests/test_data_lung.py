"""Lung preprocessing and the offline breathing phantom with exact landmarks."""

import numpy as np
import pytest
import torch

from equireg.data.lung import (lung_pair, lung_phantom, prepare_lung_ct, preprocess_ct, resample,
                               resample_points, resampled_spacing)
from equireg.metrics import landmark_errors_mm, point_errors_mm
from equireg.transforms import Transform, identity_map, jacobian_determinant, sample, warp

SHAPE = (32, 32, 32)


@pytest.fixture(scope="module")
def pair():
    return lung_pair(3, shape=SHAPE, landmarks=80)


def map_transform(coordinates: np.ndarray) -> Transform:
    """The transform a coordinate map stands for: linear interpolation of it."""
    field = torch.from_numpy(coordinates)[None].double()
    return Transform(lambda x: sample(field, x.double()))


def test_phantom_anatomy():
    phantom = lung_phantom(0, shape=SHAPE, extent_mm=(300.0, 320.0, 320.0))
    assert phantom.image.shape == SHAPE and phantom.spacing == (300 / 32, 10.0, 10.0)
    assert 0.05 < phantom.lung_mask.mean() < 0.3
    assert not (phantom.vessel_mask & ~phantom.lung_mask).any()
    assert phantom.vessel_mask.sum() > 0.02 * phantom.lung_mask.sum()
    lung_hu = phantom.image[phantom.lung_mask & ~phantom.vessel_mask]
    assert -950 < lung_hu.mean() < -750
    assert phantom.image.min() == -1000 and phantom.image.max() >= 40
    # Two lungs: the mid-sagittal plane holds no lung.
    assert not phantom.lung_mask[:, :, SHAPE[2] // 2].any()


def test_same_seed_same_bytes(pair):
    again = lung_pair(3, shape=SHAPE, landmarks=80)
    for name in ("moving", "fixed", "moving_mask", "fixed_mask", "moving_landmarks", "fixed_landmarks",
                 "coordinates", "inverse_coordinates"):
        assert getattr(pair, name).tobytes() == getattr(again, name).tobytes(), name
    assert not np.array_equal(lung_pair(4, shape=SHAPE, landmarks=80).fixed, pair.fixed)


def test_tre_of_the_true_transform_is_zero(pair):
    spacing = pair.spacing
    before = point_errors_mm(pair.fixed_landmarks, pair.moving_landmarks, spacing)
    exact = landmark_errors_mm(map_transform(pair.coordinates), pair.fixed_landmarks, pair.moving_landmarks,
                               SHAPE, SHAPE, spacing)
    inverse = landmark_errors_mm(map_transform(pair.inverse_coordinates), pair.moving_landmarks,
                                 pair.fixed_landmarks, SHAPE, SHAPE, spacing)
    print("mTRE mm: unregistered", before.mean(), "true map", exact.max(), "inverse map", inverse.max())
    assert before.mean() > 2.0
    assert exact.max() < 1e-3
    assert inverse.max() < 0.2  # numerical inverse: 0.02 voxel


def test_landmarks_lie_in_the_lungs(pair):
    index = tuple(pair.fixed_landmarks.astype(int).T)
    assert (pair.fixed_mask[index] == 1).all()
    assert np.array_equal(pair.fixed_landmarks, np.round(pair.fixed_landmarks))
    assert len(np.unique(pair.fixed_landmarks, axis=0)) == 80


def test_breathing_is_smooth_diffeomorphic_and_mostly_craniocaudal(pair):
    coordinates = torch.from_numpy(pair.coordinates)[None].double()
    determinant = jacobian_determinant(coordinates)
    assert float(determinant.min()) > 0.5 and float(determinant.max()) < 2.0
    displacement_mm = (pair.moving_landmarks - pair.fixed_landmarks) * np.asarray(pair.spacing)
    assert np.abs(displacement_mm[:, 0]).mean() > 2 * np.abs(displacement_mm[:, 1:]).mean()
    # phi o phi^-1 = identity.
    inverse = torch.from_numpy(pair.inverse_coordinates)[None].double()
    roundtrip = sample(coordinates, inverse) - identity_map(SHAPE, dtype=torch.float64)
    assert float(roundtrip[..., 4:-4, 4:-4, 4:-4].abs().max()) * (SHAPE[0] - 1) < 0.05


def test_fixed_image_is_the_moving_image_under_the_map(pair):
    moved_mask = warp(torch.from_numpy(pair.moving_mask)[None, None], torch.from_numpy(pair.coordinates)[None])
    overlap = (moved_mask[0, 0].numpy() >= 0.5) & (pair.fixed_mask == 1)
    dice = 2 * overlap.sum() / ((moved_mask >= 0.5).sum().item() + pair.fixed_mask.sum())
    assert dice > 0.99


def test_preprocess_clamps_scales_and_masks():
    hu = np.array([[-2000.0, -1000.0, -500.0], [0.0, 300.0, -250.0]])
    mask = np.array([[1, 1, 1], [1, 1, 0]])
    np.testing.assert_allclose(preprocess_ct(hu), [[0, 0, 0.5], [1, 1, 0.75]])
    np.testing.assert_allclose(preprocess_ct(hu, mask), [[0, 0, 0.5], [1, 1, 0]])
    with pytest.raises(ValueError, match="lung mask shape"):
        preprocess_ct(hu, mask[:, :2])


def test_resampling_keeps_physical_distances():
    rng = np.random.default_rng(0)
    old_shape, spacing, new_shape = (40, 50, 60), (2.5, 0.7, 0.7), (17, 23, 29)
    points = rng.uniform(0, 1, (10, 3)) * (np.array(old_shape) - 1)
    other = rng.uniform(0, 1, (10, 3)) * (np.array(old_shape) - 1)
    new_spacing = resampled_spacing(spacing, old_shape, new_shape)
    before = point_errors_mm(points, other, spacing)
    after = point_errors_mm(resample_points(points, old_shape, new_shape),
                                   resample_points(other, old_shape, new_shape), new_spacing)
    np.testing.assert_allclose(after, before)
    # A linear ramp is reproduced exactly at the new grid (end voxels stay in place).
    ramp = np.broadcast_to(np.arange(old_shape[0], dtype=np.float32)[:, None, None], old_shape)
    resampled = resample(ramp, new_shape, antialias=False)
    np.testing.assert_allclose(resampled[:, 0, 0], np.linspace(0, old_shape[0] - 1, new_shape[0]), atol=1e-4)
    image, out_spacing = prepare_lung_ct(np.full(old_shape, -500.0), np.ones(old_shape), spacing, new_shape)
    assert image.shape == new_shape and out_spacing == new_spacing
    np.testing.assert_allclose(image, 0.5, atol=1e-6)
