"""Procedural retina vessel masks and the vessel map of scikit-image's fundus photograph."""

import numpy as np
import pytest
from scipy import ndimage

from equireg.data.retina import (DRIVE_SHAPE, fov_mask, generate_vessel_mask, plot_vessel_masks,
                                 skimage_retina_vessels, vessel_statistics)

SEEDS = range(6)


@pytest.fixture(scope="module")
def masks():
    return {seed: generate_vessel_mask(seed) for seed in SEEDS}


def test_masks_are_binary_drive_sized_and_inside_the_field_of_view(masks):
    for mask in masks.values():
        assert mask.shape == DRIVE_SHAPE and mask.dtype == np.float32
        assert set(np.unique(mask)) == {0.0, 1.0}
        assert not mask[~fov_mask()].any()


def test_masks_look_like_vessel_trees(masks):
    """DRIVE's manual labels cover ~9 % of the image with one main tree and ~100-250 junctions."""
    for seed, mask in masks.items():
        stats = vessel_statistics(mask)
        print(seed, {k: round(v, 3) for k, v in stats.items()})
        assert 0.03 < stats["vessel_fraction"] < 0.15
        assert 50 <= stats["branch_points"] <= 500
        assert stats["end_points"] >= 20
        assert stats["largest_component_fraction"] > 0.8


def test_vessels_taper_from_thick_trunks_to_thin_ends(masks):
    for mask in masks.values():
        width = 2 * ndimage.distance_transform_edt(mask)  # local diameter, at the centreline
        assert width.max() >= 6  # trunks leaving the disc
        thin = ndimage.binary_erosion(mask, iterations=1)
        assert thin.sum() < 0.75 * mask.sum()  # most vessel pixels belong to thin vessels


def test_optic_disc_lies_left_or_right_of_centre():
    """The thickest vessels meet at the disc: their centroid falls on either side across seeds."""
    sides = set()
    for seed in range(8):
        trunks = ndimage.binary_erosion(generate_vessel_mask(seed), iterations=2)
        column = np.nonzero(trunks)[1].mean()
        sides.add(column < DRIVE_SHAPE[1] / 2)
    assert sides == {True, False}


def test_same_seed_same_bytes_other_seed_other_mask(masks):
    assert generate_vessel_mask(3).tobytes() == masks[3].tobytes()
    assert np.mean(masks[3] != masks[4]) > 0.05


def test_generator_accepts_other_shapes():  # its speed: benchmarks/vessel_masks.py
    small = generate_vessel_mask(11, shape=(292, 283))
    assert small.shape == (292, 283) and 0.02 < small.mean() < 0.2
    with pytest.raises(ValueError, match="shape"):
        generate_vessel_mask(0, shape=(10, 10))


def test_skimage_fundus_gives_a_drive_like_vessel_map():
    vessels = skimage_retina_vessels()
    assert vessels.shape == DRIVE_SHAPE and vessels.dtype == np.float32
    stats = vessel_statistics(vessels)
    print(stats)
    assert 0.03 < stats["vessel_fraction"] < 0.15
    assert stats["branch_points"] >= 50
    assert stats["largest_component_fraction"] > 0.5


def test_plot_writes_a_figure(tmp_path, masks):
    path = tmp_path / "masks.png"
    plot_vessel_masks([masks[0], masks[1]], titles=["0", "1"]).savefig(path)
    assert path.stat().st_size > 1000
