"""The lung experiment on chest CT: physical-space resampling, lung mask, breathing motion, landmarks,
the routes to the data and the patient split, on small volumes made here (nothing is downloaded)."""

import subprocess
import tarfile

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from equireg import experiments
from equireg.data import chest_ct
from equireg.data.breathing import breathing_pair, cranio_caudal_profile
from equireg.data.chest_ct import ChestCT, ChestCTUnavailable
from equireg.data.physical import cube_around, resample_physical
from equireg.geometry import geometry, index_to_physical, physical_to_index
from equireg.transforms import jacobian_determinant, sample

SIZE = 24


def chest_hu(shape=(20, 40, 40), lung_width=0.33, seed=0) -> np.ndarray:
    """A small axial chest in HU (array [z, y, x]): air, a body cylinder, two lungs holding bright
    blobs ("vessels")."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[tuple(slice(-1.0, 1.0, complex(0, n)) for n in shape)]
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[np.broadcast_to((y / 0.85) ** 2 + (x / 0.95) ** 2 <= 1.0, shape)] = 40.0
    for side in (-1.0, 1.0):
        lung = ((z / 0.85) ** 2 + (y / 0.65) ** 2 + ((x - side * 0.5) / lung_width) ** 2) <= 1.0
        hu[lung] = -850.0
    vessels = (rng.uniform(size=shape) < 0.05) & (hu == -850.0)
    hu[ndimage.binary_dilation(vessels, np.ones((1, 2, 2), bool)) & (hu == -850.0)] = -450.0
    return hu


def chest_image(hu: np.ndarray, spacing=(2.0, 2.0, 4.0), origin=(-20.0, -30.0, -100.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


@pytest.fixture(scope="module")
def patients() -> dict[str, ChestCT]:
    return {"lung1": chest_ct.prepare(chest_image(chest_hu(seed=1)), SIZE),
            "lung2": chest_ct.prepare(chest_image(chest_hu(lung_width=0.28, seed=2)), SIZE)}


def test_resampling_follows_origin_spacing_and_direction():
    # axes permuted and flipped, anisotropic spacing, an origin far from zero
    direction = (0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
    source = ((50.0, -20.0, 300.0), (1.5, 0.8, 3.0), direction)
    shape = (12, 20, 30)
    array = np.zeros(shape, dtype=np.float32)
    array[5, 7, 11] = 1.0
    point = index_to_physical(np.array([5.0, 7.0, 11.0]), *source)
    target = cube_around(np.stack([point - 20, point + 20]), 41, 0.0)
    resampled = resample_physical(array, source, (41,) * 3, target, order=0)
    expected = physical_to_index(point, *target)
    # the target voxels nearest to that source voxel form a box centred on its physical point
    np.testing.assert_allclose(np.argwhere(resampled == 1.0).mean(axis=0), expected, atol=0.5)
    # a smooth image agrees with SimpleITK's own resampling (finer target: no smoothing on our side)
    smooth = ndimage.gaussian_filter(np.random.default_rng(0).standard_normal(shape), 2).astype(np.float32)
    image = sitk.GetImageFromArray(smooth)
    image.SetOrigin(source[0]), image.SetSpacing(source[1]), image.SetDirection(source[2])
    fine = cube_around(np.stack([point - 5, point + 5]), 11, 0.0)
    reference = sitk.Image(11, 11, 11, sitk.sitkFloat32)
    reference.SetOrigin(fine[0]), reference.SetSpacing(fine[1]), reference.SetDirection(fine[2])
    itk = sitk.GetArrayFromImage(sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0))
    np.testing.assert_allclose(resample_physical(smooth, source, (11,) * 3, fine), itk, atol=1e-5)


def test_prepared_ct_is_isotropic_head_to_feet_and_holds_the_lungs(patients):
    ct = patients["lung1"]
    assert ct.image.shape == (SIZE,) * 3 and len(set(ct.spacing)) == 1
    top, bottom = (index_to_physical(np.array([i, 0.0, 0.0]), *ct.geometry)[2] for i in (0, SIZE - 1))
    assert top > bottom  # array axis 0 runs from head (superior, +z) to feet
    assert 0.05 < ct.lung_mask.mean() < 0.5
    assert (ct.image[ct.lung_mask] < -400).mean() > 0.9
    # two lungs: the mid-sagittal plane holds none
    assert not ct.lung_mask[:, :, SIZE // 2].any()


@pytest.fixture(scope="module")
def pair(patients):
    return breathing_pair(patients["lung1"], (2, 0), landmarks=40)


def test_breathing_is_invertible_and_landmarks_follow_the_exact_map(pair):
    determinant = jacobian_determinant(torch.from_numpy(pair.coordinates)[None].double())
    assert float(determinant.min()) > 0.0
    # the fixed image is the moving image under phi, so each landmark sees the same intensity in both
    moved = ndimage.map_coordinates(pair.moving, pair.moving_landmarks.T, order=1, mode="constant",
                                    cval=float(pair.moving.min()))
    np.testing.assert_allclose(moved, pair.fixed[tuple(pair.fixed_landmarks.astype(int).T)], atol=1e-3)
    # and the inverse map takes the moving landmarks back to where they came from
    scale = SIZE - 1
    query = torch.from_numpy(pair.moving_landmarks / scale).T[None, :, :, None, None]
    back = sample(torch.from_numpy(pair.inverse_coordinates)[None].double(), query.double())[0, :, :, 0, 0].T
    assert float(np.abs(back.numpy() * scale - pair.fixed_landmarks).max()) < 0.1


def test_breathing_moves_the_base_more_than_the_apex_and_mostly_head_to_feet(pair):
    displacement_mm = (pair.moving_landmarks - pair.fixed_landmarks) * np.asarray(pair.spacing)
    distance = np.linalg.norm(displacement_mm, axis=1)
    row = pair.fixed_landmarks[:, 0]
    assert distance[row > np.median(row)].mean() > 1.2 * distance[row <= np.median(row)].mean()
    assert np.abs(displacement_mm[:, 0]).mean() > np.abs(displacement_mm[:, 1:]).mean()
    assert 2.0 < distance.mean() < 15.0 and distance.max() < 25.0
    profile = cranio_caudal_profile(pair.moving_mask > 0.5)
    assert profile[0] < 0.1 and profile[-1] > 0.9 and (np.diff(profile) >= 0).all()


def test_same_seed_same_pair(patients, pair):
    again = breathing_pair(patients["lung1"], (2, 0), landmarks=40)
    for name in ("fixed", "moving_landmarks", "fixed_landmarks", "coordinates"):
        assert getattr(pair, name).tobytes() == getattr(again, name).tobytes(), name
    other = breathing_pair(patients["lung1"], (2, 1), landmarks=40)
    assert not np.array_equal(other.coordinates, pair.coordinates)


def test_volumes_are_read_from_a_folder_or_the_sdist(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for name, seed in (("lung1", 1), ("lung2", 2)):
        sitk.WriteImage(chest_image(chest_hu((6, 10, 10), seed=seed)), str(folder / f"{name}_image.nrrd"))
    archive = tmp_path / chest_ct.SDIST_FILE
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="pyradiomics_bhklab-3.1.4/data")
    for source in (folder, archive, tmp_path):
        volumes = chest_ct.read_volumes(source)
        assert sorted(volumes) == ["lung1", "lung2"]
        assert geometry(volumes["lung2"])[1] == (2.0, 2.0, 4.0)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(volumes["lung1"]),
                                      sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "lung1_image.nrrd"))))


def test_no_route_to_the_data_is_a_clear_error_and_writes_nothing(tmp_path, monkeypatch):
    def offline(folder):
        raise subprocess.CalledProcessError(1, ["pip"], stderr="ERROR: Could not find a version (offline)\nhint: x")

    monkeypatch.setattr(chest_ct, "download_sdist", offline)
    cache = tmp_path / "chest_ct.npz"
    with pytest.raises(ChestCTUnavailable, match="offline") as error:
        experiments.build_chest_ct(cache, SIZE, None, tmp_path / "download")
    for route in ("datasets: lung_ct:", "pip download --no-deps --no-binary :all:", "downloads it into"):
        assert route in str(error.value)
    with pytest.raises(ChestCTUnavailable, match=r"datasets.lung_ct = .*missing"):
        experiments.build_chest_ct(cache, SIZE, tmp_path / "missing", tmp_path / "download")
    assert not cache.exists()


def test_training_and_testing_use_different_patients(tmp_path, patients):
    assert experiments.CT_PATIENTS["train"] != experiments.CT_PATIENTS["test"]
    assert experiments.CT_PATIENTS["val"] != experiments.CT_PATIENTS["train"]
    cache = tmp_path / "chest_ct.npz"
    chest_ct.save_cache(cache, patients)
    settings = {"data": "ct", "size": SIZE, "pairs": 1, "train_pairs": 2, "val_pairs": 1, "landmarks": 10}
    for split in ("train", "test"):
        experiments.build_lung_set(tmp_path / f"{split}.npz", split, settings, chest_ct=cache)
        pairs = experiments.load_pairs(tmp_path / f"{split}.npz")
        patient = patients[experiments.CT_PATIENTS[split]]
        np.testing.assert_array_equal(pairs["moving_label"][:, 0] > 0.5, np.broadcast_to(patient.lung_mask,
                                                                                          pairs["moving_label"][:, 0].shape))
        assert ("coordinates" in pairs) == (split != "train")
