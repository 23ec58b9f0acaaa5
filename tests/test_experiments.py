"""Library functions behind the workflow rules, on tiny inputs."""

import numpy as np
import pandas as pd
import pytest
from test_data_loaders import random_points, write_dirlab_case

from equireg import experiments
from equireg.data import loaders
from equireg.data.datasets import load_arrays


def _write_copdgene(root, shape):
    for phase in ("iBH", "eBH"):
        write_dirlab_case(root / "copd1", f"copd1_{phase}CT.img", shape, random_points(shape), 0,
                          root / "copd1" / f"copd1_300_{phase}_xyz_r1.txt")


def _write_dirlab4dct(root, shape):
    for phase in ("T00", "T50"):
        write_dirlab_case(root / "Case1Pack" / "Images", f"case1_{phase}_s.img", shape, random_points(shape), 0,
                          root / "Case1Pack" / "ExtremePhases" / f"Case1_300_{phase}_xyz.txt")


REAL_LUNG = {"copdgene": (loaders.DIRLAB_COPDGENE, _write_copdgene, loaders.load_dirlab_copdgene),
             "dirlab4dct": (loaders.DIRLAB_4DCT, _write_dirlab4dct, loaders.load_dirlab_4dct)}


@pytest.mark.parametrize("dataset", REAL_LUNG)
def test_real_lung_test_set_keeps_landmarks_and_spacing(tmp_path, monkeypatch, dataset):
    shape, spacing = (12, 20, 16), (2.5, 0.6, 0.6)
    table, write, load = REAL_LUNG[dataset]
    monkeypatch.setitem(table, 1, (shape, spacing))
    write(tmp_path, shape)
    experiments.build_lung_set(tmp_path / "test.npz", "test", {"size": 17, "pairs": 1}, **{dataset: tmp_path})
    pairs = experiments.load_pairs(tmp_path / "test.npz")
    assert pairs["moving"].shape == (1, 1, 17, 17, 17)
    assert pairs["fixed_landmarks"].shape == (1, 300, 3)
    # resampled spacing keeps the physical extent: (N - 1) * spacing is unchanged
    np.testing.assert_allclose(pairs["spacing"][0] * 16, np.multiply(spacing, np.subtract(shape, 1)))
    # landmarks scale with the grid: unregistered TRE in mm is the same before and after resampling
    original = load(tmp_path, 1)
    before = np.linalg.norm((original.fixed_landmarks - original.moving_landmarks) * spacing, axis=1)
    after = np.linalg.norm((pairs["fixed_landmarks"][0] - pairs["moving_landmarks"][0]) * pairs["spacing"][0], axis=1)
    np.testing.assert_allclose(after, before, rtol=1e-9)
    with pytest.raises(ValueError, match="set together"):
        experiments.build_lung_set(tmp_path / "both.npz", "test", {"size": 17, "pairs": 1}, copdgene=tmp_path,
                                   dirlab4dct=tmp_path)


def _write_nlst(root, counts, shape=(12, 20, 16)):
    """NLST's layout with pairs whose keypoint counts differ, as in the real data set."""
    import json

    import SimpleITK as sitk

    listing = []
    for case, count in enumerate(counts, 1):
        for index in ("0000", "0001"):
            name = f"NLST_{case:04d}_{index}"
            for folder, array in (("imagesTr", np.full(shape, -800, np.int16)), ("masksTr", np.ones(shape, np.uint8))):
                (root / folder).mkdir(exist_ok=True)
                sitk.WriteImage(sitk.GetImageFromArray(array), str(root / folder / f"{name}.nii.gz"))
            (root / "keypointsTr").mkdir(exist_ok=True)
            points = random_points(shape, count)
            (root / "keypointsTr" / f"{name}.csv").write_text(
                "\n".join(f"{x:.1f},{y:.1f},{z:.1f}" for z, y, x in points) + "\n")
        listing.append({"fixed": f"./imagesTr/NLST_{case:04d}_0000.nii.gz",
                        "moving": f"./imagesTr/NLST_{case:04d}_0001.nii.gz"})
    (root / "NLST_dataset.json").write_text(json.dumps({"registration_val": listing}))


def test_nlst_test_set_stacks_pairs_with_different_keypoint_counts(tmp_path):
    _write_nlst(tmp_path, [7, 5, 9])
    experiments.build_lung_set(tmp_path / "test.npz", "test", {"size": 17, "pairs": 2}, nlst=tmp_path)
    pairs = experiments.load_pairs(tmp_path / "test.npz")
    assert pairs["moving"].shape == (2, 1, 17, 17, 17) and pairs["fixed_landmarks"].shape == (2, 5, 3)
    first = loaders.load_nlst(tmp_path, *loaders.nlst_pairs(tmp_path)[0])
    scale = 16 / (np.asarray(first.fixed.shape) - 1)
    # each kept keypoint is one of the pair's own, fixed and moving rows still corresponding
    fixed, moving = first.fixed_landmarks * scale, first.moving_landmarks * scale
    kept = [int(np.argmin(np.abs(fixed - point).sum(1))) for point in pairs["fixed_landmarks"][0]]
    np.testing.assert_allclose(pairs["fixed_landmarks"][0], fixed[kept], atol=1e-9)
    np.testing.assert_allclose(pairs["moving_landmarks"][0], moving[kept], atol=1e-9)
    with pytest.raises(ValueError, match="set together"):
        experiments.build_lung_set(tmp_path / "both.npz", "test", {"size": 17, "pairs": 1}, copdgene=tmp_path,
                                   nlst=tmp_path)


def test_load_pairs_names_a_broken_file(tmp_path):
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="broken.npz"):
        experiments.load_pairs(broken)


def test_evaluation_rows_name_the_test_set_the_pair_set_says_it_is(tmp_path):
    rng = np.random.default_rng(0)
    images = {name: rng.random((2, 1, 16, 16)).astype(np.float32)
              for name in ("moving", "fixed", "moving_label", "fixed_label")}
    misnamed = tmp_path / "test_none.npz"  # the file's name is not what it is
    experiments.save_pairs(misnamed, **images, split=np.array("real"), condition=np.array("shift_scale"))
    experiments.evaluate_retina("voxelmorph", None, [misnamed], tmp_path / "run.csv", tmp_path / "examples.npz",
                                {"compute": {"device": "cpu", "precision": "fp32"}}, "none", 0)
    rows = pd.read_csv(tmp_path / "run.csv")
    assert set(rows.test_set) == {"real"} and set(rows.test_condition) == {"shift_scale"}
    examples = load_arrays(tmp_path / "examples.npz")
    assert examples["method"].item() == "voxelmorph" and "real_shift_scale/warped" in examples


def test_a_pair_set_that_does_not_say_what_it_is_is_refused(tmp_path):
    unnamed = tmp_path / "test_none.npz"
    experiments.save_pairs(unnamed, moving=np.zeros((1, 1, 8, 8), np.float32), fixed=np.zeros((1, 1, 8, 8), np.float32))
    with pytest.raises(ValueError, match="does not say its split and condition"):
        experiments.evaluate_retina("voxelmorph", None, [unnamed], tmp_path / "run.csv", tmp_path / "examples.npz",
                                    {"compute": {"device": "cpu", "precision": "fp32"}}, "none", 0)
