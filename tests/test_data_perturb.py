"""CARL's retina perturbations: shift by zero rows, elastic warps, zoom, pooling, exact maps."""

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.signal import fftconvolve

from equireg.data.perturb import PAPER_SHIFT, make_pair, retina_dataset, shift_sweep_pairs
from equireg.data.retina import generate_vessel_mask
from equireg.metrics import fold_percentage
from equireg.transforms import jacobian_determinant, warp

NO_WARP = ()
LIGHT_WARP = ((3.0, 3),)


@pytest.fixture(scope="module")
def mask():
    return generate_vessel_mask(7)


def correlation_peak(moving: np.ndarray, fixed: np.ndarray) -> tuple[int, int]:
    """Offset (rows, cols) by which ``fixed`` content lies further along than ``moving``'s."""
    a, b = moving - moving.mean(), fixed - fixed.mean()
    correlation = fftconvolve(b, a[::-1, ::-1], mode="full")
    peak = np.unravel_index(np.argmax(correlation), correlation.shape)
    return int(peak[0] - (a.shape[0] - 1)), int(peak[1] - (a.shape[1] - 1))


def test_paper_geometry_784_by_565_pooled_to_196_by_141(mask):
    pair = make_pair(mask, shifted=True, seed=0, pool=4, with_map=False)
    for image in (pair.moving, pair.fixed, pair.moving_label, pair.fixed_label):
        assert image.shape == (196, 141) and image.dtype == np.float32
    assert make_pair(mask, shifted=False, seed=0, pool=8, with_map=False).fixed.shape == (98, 70)
    # The moving image's 200 zero rows are at the bottom; the shifted fixed image's at the top.
    assert not pair.moving[146:].any() and pair.moving[:146].any()
    unwarped = make_pair(mask, shifted=True, seed=0, stages=NO_WARP)
    assert not unwarped.fixed[:50].any() and unwarped.fixed[50:].any()
    assert set(np.unique(pair.fixed_label)) <= {0.0, 1.0}
    # Upstream stored DRIVE as 1 - mask: bright content, dark vessels, black padding; same labels.
    inverted = make_pair(mask, shifted=True, seed=0, stages=NO_WARP, invert=True, with_map=False)
    np.testing.assert_allclose(inverted.moving[:146], 1 - unwarped.moving[:146], atol=1e-6)
    assert not inverted.moving[146:].any()
    np.testing.assert_array_equal(inverted.fixed_label, unwarped.fixed_label)


@pytest.mark.parametrize("stages", [NO_WARP, LIGHT_WARP])
def test_correlation_peak_sits_at_the_shift(mask, stages):
    shifted = make_pair(mask, shifted=True, seed=1, stages=stages, with_map=False)
    assert correlation_peak(shifted.moving, shifted.fixed) == (PAPER_SHIFT // 4, 0)
    plain = make_pair(mask, shifted=False, seed=1, stages=stages, with_map=False)
    assert correlation_peak(plain.moving, plain.fixed) == (0, 0)


def test_shift_sweep_magnitudes_and_directions(mask):
    shifts = [(0, 0), (100, 0), (-200, 0), (300, 0), (0, 120), (-160, -80)]
    pairs = shift_sweep_pairs(mask, shifts, seed=2, stages=NO_WARP, with_map=False, pool=4)
    assert len({p.fixed.shape for p in pairs}) == 1  # one canvas for the whole sweep
    assert pairs[0].fixed.shape == ((584 + 300) // 4, (565 + 120) // 4)
    for (dy, dx), pair in zip(shifts, pairs):
        assert correlation_peak(pair.moving, pair.fixed) == (dy // 4, dx // 4)


def test_ground_truth_map_warps_moving_onto_fixed(mask):
    """At full resolution, moving o phi must reproduce the cubic-spline-warped fixed image."""
    smooth = ndimage.gaussian_filter(mask, 2.0)
    smooth /= smooth.max()
    for shift, scaled in (((PAPER_SHIFT, 0), True), ((-60, 40), False)):
        pair = make_pair(smooth, shift=shift, scaled=scaled, seed=3, pool=1, pad=(200, 40))
        moved = warp(torch.from_numpy(pair.moving)[None, None], torch.from_numpy(pair.coordinates)[None],
                     padding_mode="zeros")[0, 0].numpy()
        error = np.abs(moved - pair.fixed)
        print(shift, scaled, "max", error.max(), "mean", error.mean())
        assert error.mean() < 1e-3 and error.max() < 0.03


def test_pooled_map_matches_the_pooled_images(mask):
    """Pooling does not commute with warping, but the map must beat any half-pixel offset of it."""
    smooth = ndimage.gaussian_filter(mask, 2.0)
    pair = make_pair(smooth / smooth.max(), shifted=True, scaled=True, seed=4, pool=4)
    moving, coordinates = torch.from_numpy(pair.moving)[None, None], torch.from_numpy(pair.coordinates)[None]
    errors = {}
    for axis in (0, 1):
        for offset in (-0.5, 0.0, 0.5):
            shifted = coordinates.clone()
            shifted[:, axis] += offset / (pair.fixed.shape[axis] - 1)
            errors[axis, offset] = np.abs(warp(moving, shifted)[0, 0].numpy() - pair.fixed).mean()
    print("mean errors", errors, "without registration", np.abs(pair.moving - pair.fixed).mean())
    assert errors[0, 0.0] < 0.1 * np.abs(pair.moving - pair.fixed).mean()
    for axis in (0, 1):
        assert errors[axis, 0.0] < 0.6 * min(errors[axis, -0.5], errors[axis, 0.5])


def test_paper_warps_are_smooth_and_fold_free(mask):
    for seed in range(2):
        pair = make_pair(mask, shifted=True, scaled=seed == 1, seed=seed, pool=4)
        determinant = jacobian_determinant(torch.from_numpy(pair.coordinates)[None].double())
        folds = fold_percentage(torch.from_numpy(pair.coordinates)[None].double())
        print(seed, "% folds", folds, "det range", float(determinant.min()),
              float(determinant.max()))
        assert folds == 0.0
        assert 0.2 < float(determinant.min()) and float(determinant.max()) < 3.0


def test_zoom_shrinks_the_fixed_content(mask):
    still = ((0.0, 3),)  # a zero displacement: only the zoom acts
    plain = make_pair(mask, seed=0, stages=still, pool=1, with_map=False)
    zoomed = make_pair(mask, seed=0, stages=still, scaled=True, pool=1, with_map=False)
    ratio = zoomed.fixed.sum() / plain.fixed.sum()
    assert ratio == pytest.approx(0.8 ** 2, abs=0.06)


def test_pairs_are_reproducible_from_their_seed(mask):
    first = make_pair(mask, shifted=True, scaled=True, seed=(5, 1), pool=8)
    again = make_pair(mask, shifted=True, scaled=True, seed=(5, 1), pool=8)
    other = make_pair(mask, shifted=True, scaled=True, seed=(5, 2), pool=8, with_map=False)
    for name in ("moving", "fixed", "moving_label", "fixed_label", "coordinates"):
        assert getattr(first, name).tobytes() == getattr(again, name).tobytes()
    assert not np.array_equal(first.fixed, other.fixed)


def test_bad_arguments_are_rejected(mask):
    with pytest.raises(ValueError, match="exceeds pad"):
        make_pair(mask, shift=(0, 10), seed=0)
    with pytest.raises(ValueError, match="either shifted or shift"):
        make_pair(mask, shifted=True, shift=(0, 0), seed=0)
    with pytest.raises(ValueError, match="condition"):
        retina_dataset([mask], "tilted", 1, 0)


def test_retina_dataset_order_flips_and_labels():
    data = retina_dataset([generate_vessel_mask(20)], "shift", warps_per_image=2, seed=0, pool=4)
    assert len(data) == 4 and data.moving.shape == (4, 1, 196, 141) and data.coordinates is None
    # Pair k uses warp k // 2 of image k % 2; image 1 is the upside-down mask, and the moving
    # content fills the top 146 rows.
    np.testing.assert_array_equal(data.moving[1, 0, :146], data.moving[0, 0, :146][::-1])
    np.testing.assert_array_equal(data.moving[2], data.moving[0])
    assert not np.array_equal(data.fixed[2], data.fixed[0])
    assert set(np.unique(data.fixed_label)) == {0.0, 1.0}
    assert all(correlation_peak(m[0], f[0])[0] > 30 for m, f in zip(data.moving, data.fixed))
