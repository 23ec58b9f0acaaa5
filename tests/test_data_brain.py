"""Brain data on small volumes made here (no download): finding the templates, physical-space
resampling onto the canvas, pairs with an exact map, the shift of the moving image with its labels."""

import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from equireg.data import brain
from equireg.data.brain_pairs import brain_pair, shift_pair, shift_volume
from equireg.geometry import index_to_physical
from equireg.metrics import dice, label_dice
from equireg.transforms import warp, warp_labels

#: a small "Colin27": 1 mm, Colin27's directions (LPS, x and y reversed), origin off zero
SIZE_XYZ = (44, 52, 40)
ORIGIN = (21.0, 25.0, -19.0)
DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def _write(array: np.ndarray, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetOrigin(ORIGIN)
    image.SetDirection(DIRECTION)
    sitk.WriteImage(image, str(path))


def _physical_grid() -> np.ndarray:
    """Physical (x, y, z) of every source voxel, ``[z, y, x, 3]``."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in SIZE_XYZ[::-1]], indexing="ij"), -1).astype(float)
    return index_to_physical(index, ORIGIN, (1.0, 1.0, 1.0), DIRECTION)


def _labels_at(points: np.ndarray) -> np.ndarray:
    """A toy atlas defined in physical space: an ellipsoid "brain" cut into 8 octants (labels 1-8)
    around (0, 0, 0); 0 outside."""
    x, y, z = np.moveaxis(points, -1, 0)
    inside = (x / 15) ** 2 + (y / 19) ** 2 + (z / 13) ** 2 <= 1
    return np.where(inside, 1 + (x > 0) + 2 * (y > 0) + 4 * (z > 0), 0).astype(np.uint8)


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("templates")
    points = _physical_grid()
    labels = _labels_at(points)
    t1 = np.where(labels > 0, 60 + 10 * labels + points[..., 2], 20).astype(np.uint8)  # skull-ish background
    extracted = np.where(labels > 0, t1, 0).astype(np.uint8)
    extracted[:, ::5, :] = 0  # the crude mask's stripes
    _write(t1, folder / "ch2.nii.gz")
    _write(extracted, folder / "ch2bet.nii.gz")
    _write(labels, folder / "aal.nii.gz")
    (folder / "aal.nii.txt").write_text("".join(f"{k} Region_{k} {1000 + k}\r\n" for k in range(1, 9)) + "\r\n")
    return folder


@pytest.fixture(scope="module")
def volume(templates) -> brain.Colin27:
    return brain.prepare(templates, 1.5, "x", padding=8)


def test_canvas_covers_the_field_of_view_and_pads_the_shift_axis(volume, templates):
    # 43 / 51 / 39 mm of field of view at 1.5 mm: 30 / 35 / 27 voxels; x (array axis 2) padded by 8
    assert volume.image.shape == (27, 35, 30 + 8)
    # with pooling 4, every axis grows to N - 1 divisible by 4 (CARL's whole-cell equivariance)
    assert brain.prepare(templates, 1.5, "x", padding=8, pooling=4).image.shape == (29, 37, 41)
    assert volume.spacing == 1.5 and volume.geometry[2] == DIRECTION
    assert volume.names == tuple(f"Region_{k}" for k in range(1, 9))


def test_resampling_is_in_physical_space(volume):
    # every canvas voxel carries the label of its physical point (away from region borders, where
    # nearest neighbour may pick a neighbour)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in volume.labels.shape], indexing="ij"), -1).astype(float)
    expected = _labels_at(index_to_physical(index, *volume.geometry))
    agree = (volume.labels == expected).mean()
    assert agree > 0.97
    assert set(np.unique(volume.labels)) == set(range(9))
    # the mask closes the stripes and covers the brain; the image is in [0, 1] and zero outside it
    assert dice(volume.mask, expected > 0) > 0.95
    assert volume.image.min() == 0.0 and volume.image.max() == 1.0 and not volume.image[~volume.mask].any()


def test_cache_round_trip(volume, tmp_path):
    brain.save_cache(tmp_path / "colin27.npz", volume)
    again = brain.load_cache(tmp_path / "colin27.npz")
    assert again.names == volume.names and again.geometry == volume.geometry and again.spacing == volume.spacing
    for name in ("image", "mask", "labels"):
        assert np.array_equal(getattr(again, name), getattr(volume, name))


def test_brain_mask_closes_stripes_and_keeps_the_largest_part():
    extracted = np.zeros((20, 20, 20), np.uint8)
    extracted[4:16, 4:16, 4:16] = 9
    extracted[:, ::3, :] = 0  # stripes
    extracted[0, 0, 0] = 9  # a stray voxel
    mask = brain.brain_mask(extracted)
    assert mask[5:15, 5:15, 5:15].all() and not mask[0, 0, 0]


@pytest.fixture(scope="module")
def pair(volume):
    return brain_pair(volume, (2, 0))


def _through_exact_map(pair):
    coordinates = torch.from_numpy(pair.coordinates[None])
    image = warp(torch.from_numpy(pair.moving[None, None]), coordinates, padding_mode="zeros")[0, 0].numpy()
    labels = warp_labels(torch.from_numpy(pair.moving_labels[None, None].astype(np.int64)), coordinates)[0, 0]
    return image, labels.numpy()


def _mean_dice(a, b):
    return float(label_dice(a, b, np.unique(b[b > 0])).mean())


def test_pairs_are_seeded_and_warped_by_a_few_mm(volume, pair):
    again = brain_pair(volume, (2, 0))
    assert all(np.array_equal(getattr(pair, n), getattr(again, n)) for n in ("moving", "fixed", "coordinates"))
    assert not np.array_equal(brain_pair(volume, (2, 1)).fixed, pair.fixed)
    # the exact map moves brain voxels by a few mm (two 4 mm warps), and folds nowhere
    identity = np.stack(np.meshgrid(*[np.linspace(0, 1, n) for n in pair.moving.shape], indexing="ij"))
    scale = (np.array(pair.moving.shape) - 1).reshape(3, 1, 1, 1) * volume.spacing
    moved = np.sqrt((((pair.coordinates - identity) * scale) ** 2).sum(0))[pair.fixed_mask]
    assert 2.0 < np.sqrt((moved ** 2).mean()) < 10.0
    assert _mean_dice(pair.moving_labels, pair.fixed_labels) < 0.9


def test_labels_through_the_exact_map_match_the_fixed_labels(templates, pair):
    image, labels = _through_exact_map(pair)
    assert np.abs(image - pair.fixed)[pair.fixed_mask].mean() < 0.05
    # the ceiling: what nearest-neighbour sampling, twice, leaves of a perfect map; it tends to 1 as
    # the grid refines (regions here are 10-20 voxels across at 1.5 mm, twice that at 0.75 mm)
    coarse = _mean_dice(labels, pair.fixed_labels)
    fine_pair = brain_pair(brain.prepare(templates, 0.75, "x"), (2, 0))
    fine = _mean_dice(_through_exact_map(fine_pair)[1], fine_pair.fixed_labels)
    assert 0.85 < coarse < fine and fine > 0.93
    # the exact map is no identity: without it the labels disagree far more
    assert _mean_dice(fine_pair.moving_labels, fine_pair.fixed_labels) < fine - 0.2


def test_the_shift_moves_image_and_labels_together(pair):
    shifted = shift_pair(pair, 6, axis=2)
    assert np.array_equal(shifted.moving[..., 6:], pair.moving[..., :-6]) and not shifted.moving[..., :6].any()
    assert _mean_dice(shifted.moving_labels, pair.fixed_labels) < 0.3  # far apart before registration
    image, labels = _through_exact_map(shifted)
    assert _mean_dice(labels, pair.fixed_labels) == pytest.approx(_mean_dice(_through_exact_map(pair)[1],
                                                                             pair.fixed_labels), abs=1e-6)
    assert np.abs(image - pair.fixed)[pair.fixed_mask].mean() < 0.05
    # the broken variant, the image moved but not its labels, fails the same check
    from dataclasses import replace

    broken = replace(shifted, moving_labels=pair.moving_labels)
    assert _mean_dice(_through_exact_map(broken)[1], pair.fixed_labels) < 0.5


def test_a_shift_that_would_crop_the_brain_is_refused():
    array = np.zeros((4, 10))
    array[:, 7] = 1
    assert shift_volume(array, 2, axis=1)[:, 9].all()
    with pytest.raises(ValueError, match="moves content off the canvas"):
        shift_volume(array, 3, axis=1)


def test_configured_folder_installed_package_and_download_are_tried_in_order(templates, tmp_path, monkeypatch):
    assert brain.find_templates(templates, tmp_path / "download") == templates
    assert brain.find_templates(None, tmp_path / "download", installed=templates) == templates
    (tmp_path / "deb" / brain.TEMPLATES).mkdir(parents=True)
    for name in brain.FILES:
        (tmp_path / "deb" / brain.TEMPLATES / name).write_bytes((templates / name).read_bytes())
    assert brain.find_templates(tmp_path / "deb", tmp_path / "download") == tmp_path / "deb" / brain.TEMPLATES


def test_no_route_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    def offline(*command, cwd):
        raise subprocess.CalledProcessError(100, command, stderr="E: Unable to locate package mricron-data")

    monkeypatch.setattr(brain, "_run", offline)
    download = tmp_path / "download"
    with pytest.raises(brain.BrainDataUnavailable) as error:
        brain.find_templates(None, download, installed=tmp_path / "not-installed")
    message = str(error.value)
    for route in ("datasets: colin27:", "apt-get install mricron-data", "apt-get download mricron-data",
                  "Unable to locate package", str(download)):
        assert route in message
    assert not list(download.iterdir())  # no partial download left behind
    with pytest.raises(brain.BrainDataUnavailable, match="datasets.colin27 = .* holds none of"):
        brain.find_templates(tmp_path, download)
