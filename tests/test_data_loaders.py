"""Dataset readers on small files written in the real formats, and the batch/cache helpers."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from equireg.data.datasets import PairBatches, load_arrays, save_arrays
from equireg.data.loaders import (DIRLAB_4DCT, DIRLAB_COPDGENE, drive_vessel_masks, load_dirlab_4dct,
                                  load_dirlab_copdgene, load_drive, load_nlst, nlst_pairs, read_dirlab_landmarks)

RNG = np.random.default_rng(0)


def write_dirlab_case(directory, name, shape, points_zyx, offset, landmark_file):
    """An int16 .img with a marker value at each landmark, and the one-based x y z landmark file."""
    image = np.full(shape, -1000 + offset, dtype="<i2")
    for k, (z, y, x) in enumerate(points_zyx):
        image[z, y, x] = 100 + k + offset
    directory.mkdir(parents=True, exist_ok=True)
    image.tofile(directory / name)
    rows = "\n".join(f"{x + 1}\t{y + 1}\t{z + 1}" for z, y, x in points_zyx)
    landmark_file.parent.mkdir(parents=True, exist_ok=True)
    landmark_file.write_text(rows + "\n")


def random_points(shape, count=300):
    """Distinct voxels, so each marker value survives."""
    return np.stack(np.unravel_index(RNG.choice(int(np.prod(shape)), count, replace=False), shape), 1)


def check_landmarks_hit_markers(image, points):
    values = image[tuple(points.astype(int).T)]
    np.testing.assert_array_equal(values, 100 + np.arange(len(points)))


@pytest.mark.parametrize("layout", ["pack", "deploy"])
def test_dirlab_4dct_both_layouts_one_based_and_hu_offset(tmp_path, layout):
    shape, spacing = DIRLAB_4DCT[1]
    fixed_points, moving_points = random_points(shape), random_points(shape)
    if layout == "pack":  # cases 1-5: CaseNPack, ExtremePhases, *_s.img, HU stored as is
        base, offset = tmp_path / "Case1Pack", 0
        names = ["case1_T00_s.img", "case1_T50_s.img"]
        marks = [base / "ExtremePhases" / f"Case1_300_{t}_xyz.txt" for t in ("T00", "T50")]
    else:  # Case8Deploy-style: extremePhases, no _s, dirLab300 names, HU + 1024
        base, offset = tmp_path / "Case1Deploy", 1024
        names = ["case1_T00.img", "case1_T50.img"]
        marks = [base / "extremePhases" / f"case1_dirLab300_{t}_xyz.txt" for t in ("T00", "T50")]
    for name, points, mark in zip(names, (fixed_points, moving_points), marks):
        write_dirlab_case(base / "Images", name, shape, points, offset, mark)
    pair = load_dirlab_4dct(tmp_path, 1)
    assert pair.fixed.shape == shape and pair.spacing == spacing == (2.5, 0.97, 0.97)
    np.testing.assert_array_equal(pair.fixed_landmarks, fixed_points)
    np.testing.assert_array_equal(pair.moving_landmarks, moving_points)
    check_landmarks_hit_markers(pair.fixed, pair.fixed_landmarks)
    check_landmarks_hit_markers(pair.moving, pair.moving_landmarks)
    assert pair.fixed.min() == -1000  # offset removed when present


def test_dirlab_errors_name_the_file(tmp_path):
    shape, _ = DIRLAB_4DCT[1]
    with pytest.raises(FileNotFoundError, match="T00"):
        load_dirlab_4dct(tmp_path, 1)
    (tmp_path / "Case1Pack" / "Images").mkdir(parents=True)
    short = tmp_path / "Case1Pack" / "Images" / "case1_T00_s.img"
    np.zeros(10, "<i2").tofile(short)
    with pytest.raises(ValueError, match="case1_T00_s.img.*10 int16 values"):
        load_dirlab_4dct(tmp_path, 1)
    bad = tmp_path / "marks.txt"
    bad.write_text("1\t2\n")
    with pytest.raises(ValueError, match="marks.txt:1: expected 3 values"):
        read_dirlab_landmarks(bad, count=None)
    bad.write_text("0\t2\t3\n")
    with pytest.raises(ValueError, match="one-based"):
        read_dirlab_landmarks(bad, count=None)
    bad.write_text("1 2 3\n4 5 6\n")
    with pytest.raises(ValueError, match="2 landmarks, expected 300"):
        read_dirlab_landmarks(bad)
    with pytest.raises(ValueError, match="outside"):
        read_dirlab_landmarks(bad, count=2, shape=(4, 4, 4))
    with pytest.raises(ValueError, match="1-10"):
        load_dirlab_4dct(tmp_path, 11)


def test_copdgene_table_and_reader(tmp_path):
    assert DIRLAB_COPDGENE[1] == ((121, 512, 512), (2.5, 0.625, 0.625))
    assert DIRLAB_COPDGENE[10] == ((135, 512, 512), (2.5, 0.742, 0.742))
    shape, spacing = (12, 20, 16), (2.5, 0.6, 0.6)
    points = {phase: random_points(shape) for phase in ("iBH", "eBH")}
    for phase, pts in points.items():
        write_dirlab_case(tmp_path / "copd2", f"copd2_{phase}CT.img", shape, pts, 0,
                          tmp_path / "copd2" / f"copd2_300_{phase}_xyz_r1.txt")
    pair = load_dirlab_copdgene(tmp_path, 2, geometry=(shape, spacing))
    assert pair.name == "copd2" and pair.spacing == spacing
    np.testing.assert_array_equal(pair.fixed_landmarks, points["iBH"])
    check_landmarks_hit_markers(pair.fixed, pair.fixed_landmarks)
    check_landmarks_hit_markers(pair.moving, pair.moving_landmarks)
    with pytest.raises(FileNotFoundError, match="copd3 iBH"):
        load_dirlab_copdgene(tmp_path, 3)


def test_nlst_pairs_images_masks_and_keypoints(tmp_path):
    shape_zyx, spacing_xyz = (6, 8, 10), (1.0, 2.0, 3.0)
    keypoints = {}
    for index in ("0000", "0001"):
        image = np.full(shape_zyx, -900, np.int16)
        points = random_points(shape_zyx, 5)
        for k, (z, y, x) in enumerate(points):
            image[z, y, x] = 100 + k
        keypoints[index] = points
        for folder, array in (("imagesTr", image), ("masksTr", (image > -1000).astype(np.uint8))):
            (tmp_path / folder).mkdir(exist_ok=True)
            volume = sitk.GetImageFromArray(array)
            volume.SetSpacing(spacing_xyz)
            sitk.WriteImage(volume, str(tmp_path / folder / f"NLST_0001_{index}.nii.gz"))
        (tmp_path / "keypointsTr").mkdir(exist_ok=True)
        rows = "\n".join(f"{x:.1f},{y:.1f},{z:.1f}" for z, y, x in points)  # zero-based x,y,z
        (tmp_path / "keypointsTr" / f"NLST_0001_{index}.csv").write_text(rows + "\n")
    listing = {"registration_val": [{"fixed": "./imagesTr/NLST_0001_0000.nii.gz",
                                     "moving": "./imagesTr/NLST_0001_0001.nii.gz"}]}
    (tmp_path / "NLST_dataset.json").write_text(json.dumps(listing))
    (fixed, moving), = nlst_pairs(tmp_path)
    pair = load_nlst(tmp_path, fixed, moving)
    assert pair.fixed.shape == shape_zyx and pair.spacing == (3.0, 2.0, 1.0)
    np.testing.assert_array_equal(pair.fixed_landmarks, keypoints["0000"])
    np.testing.assert_array_equal(pair.moving_landmarks, keypoints["0001"])
    check_landmarks_hit_markers(pair.fixed, pair.fixed_landmarks)
    assert pair.fixed_mask.dtype == np.float32 and pair.fixed_mask.all()
    with pytest.raises(ValueError, match="training_paired_images"):
        nlst_pairs(tmp_path, "training_paired_images")
    (tmp_path / "keypointsTr" / "NLST_0001_0001.csv").unlink()
    with pytest.raises(FileNotFoundError, match="NLST_0001_0001.csv"):
        load_nlst(tmp_path, fixed, moving)


def test_drive_reader(tmp_path):
    shape = (24, 20)
    vessels = {}
    for number in ("21", "22"):
        base = tmp_path / "training"
        for folder in ("images", "mask", "1st_manual"):
            (base / folder).mkdir(parents=True, exist_ok=True)
        rgb = RNG.integers(0, 255, (*shape, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(base / "images" / f"{number}_training.tif")
        Image.fromarray(np.full(shape, 255, np.uint8)).save(base / "mask" / f"{number}_training_mask.gif")
        vessels[number] = RNG.random(shape) < 0.2
        Image.fromarray(vessels[number].astype(np.uint8) * 255).save(base / "1st_manual" / f"{number}_manual1.gif")
    items = load_drive(tmp_path, "training")
    assert [item.name for item in items] == ["21_training", "22_training"]
    assert items[0].image.shape == (*shape, 3) and items[0].fov.all()
    masks = drive_vessel_masks(tmp_path)
    np.testing.assert_array_equal(masks[1], vessels["22"].astype(np.float32))
    assert load_drive(tmp_path, "training", observer=2)[0].vessels is None
    (tmp_path / "training" / "mask" / "22_training_mask.gif").unlink()
    with pytest.raises(FileNotFoundError, match="22_training_mask.gif"):
        load_drive(tmp_path)
    with pytest.raises(FileNotFoundError, match="images"):
        load_drive(tmp_path, "test")


def test_pair_batches_are_a_pure_function_of_seed_and_step():
    moving = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1) * np.ones((1, 1, 4, 4), np.float32)
    batches = PairBatches(moving, moving + 100, batch_size=4, seed=7)
    resumed = PairBatches(moving, moving + 100, batch_size=4, seed=7)
    seen = [batches(step)[0][:, 0, 0, 0].int().tolist() for step in range(5)]
    assert [resumed(step)[0][:, 0, 0, 0].int().tolist() for step in (4, 2)] == [seen[4], seen[2]]
    flat = sum(seen, [])
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))  # epochs
    moving_batch, fixed_batch = batches(3)
    assert moving_batch.shape == (4, 1, 4, 4) and bool((fixed_batch - moving_batch == 100).all())
    assert PairBatches(moving, moving, 4, seed=8)(0)[0][:, 0, 0, 0].tolist() != seen[0]


def test_array_files_are_atomic_and_byte_reproducible(tmp_path):
    arrays = {"fixed": RNG.random((3, 1, 5, 6)).astype(np.float32), "labels": np.arange(12).reshape(3, 4)}
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    save_arrays(first, arrays)
    save_arrays(second, dict(reversed(list(arrays.items()))))
    assert first.read_bytes() == second.read_bytes()
    loaded = load_arrays(first)
    assert set(loaded) == set(arrays) and all(np.array_equal(loaded[k], arrays[k]) for k in arrays)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "b.npz"]  # no temporaries left
    (tmp_path / "broken.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="broken.npz"):
        load_arrays(tmp_path / "broken.npz")
