"""`equireg register` end to end on small files, and its errors on bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from equireg.cli import main


def _image(path, array, spacing=None, origin=None):
    image = sitk.GetImageFromArray(array)
    if spacing:
        image.SetSpacing(spacing)
    if origin:
        image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))
    return image


def _blob(shape, centre):
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"))
    distance = sum((g - c) ** 2 for g, c in zip(grid, centre))
    return np.exp(-distance / (2 * 3.0**2)).astype(np.float32)


def test_fresh_gradicon_is_identity_and_geometry_is_kept(tmp_path, capsys):
    shape = (32, 32, 32)
    fixed = _image(tmp_path / "fixed.nii.gz", _blob(shape, (16, 16, 16)), (0.8, 0.9, 2.5), (1.0, 2.0, 3.0))
    _image(tmp_path / "moving.nii.gz", _blob(shape, (15, 17, 16)), (0.8, 0.9, 2.5), (1.0, 2.0, 3.0))
    code = main(["register", "--method", "gradicon", "--checkpoint", "none", "--moving", str(tmp_path / "moving.nii.gz"),
                 "--fixed", str(tmp_path / "fixed.nii.gz"), "--out", str(tmp_path / "out"), "--option", "levels=1"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["displacement_mm"]["max"] < 1e-5  # last conv is zero-initialised: identity
    field = sitk.ReadImage(summary["outputs"]["displacement"])
    warped = sitk.ReadImage(summary["outputs"]["warped"])
    for image in (field, warped):
        assert image.GetSize() == fixed.GetSize()
        np.testing.assert_allclose(image.GetSpacing(), fixed.GetSpacing())
        np.testing.assert_allclose(image.GetOrigin(), fixed.GetOrigin())
    assert field.GetNumberOfComponentsPerPixel() == 3
    np.testing.assert_allclose(sitk.GetArrayFromImage(warped), sitk.GetArrayFromImage(sitk.ReadImage(
        str(tmp_path / "moving.nii.gz"))), atol=1e-5)


def test_png_inputs_work_through_python_m(tmp_path):
    shape = (48, 40)
    _image(tmp_path / "fixed.png", (_blob(shape, (20, 20)) * 255).astype(np.uint8))
    _image(tmp_path / "moving.png", (_blob(shape, (22, 19)) * 255).astype(np.uint8))
    result = subprocess.run([sys.executable, "-m", "equireg", "register", "--method", "voxelmorph", "--checkpoint",
                             "none", "--moving", str(tmp_path / "moving.png"), "--fixed", str(tmp_path / "fixed.png"),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert sitk.ReadImage(summary["outputs"]["warped"]).GetSize() == (40, 48)


def test_help_lists_subcommands():
    result = subprocess.run([sys.executable, "-m", "equireg", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "register" in result.stdout


@pytest.mark.parametrize("case", ["missing", "corrupt", "nan", "dimension_mismatch", "bad_checkpoint"])
def test_bad_input_is_a_clear_error_without_output(tmp_path, capsys, case):
    good = tmp_path / "good.nii.gz"
    _image(good, _blob((24, 24), (12, 12)))
    moving, checkpoint = good, "none"
    if case == "missing":
        moving = tmp_path / "absent.nii.gz"
    elif case == "corrupt":
        moving = tmp_path / "corrupt.nii.gz"
        moving.write_bytes(good.read_bytes()[:40])
    elif case == "nan":
        array = _blob((24, 24), (12, 12))
        array[3, 4] = np.nan
        moving = tmp_path / "nan.mha"  # ITK reads NaN in NIfTI as 0
        _image(moving, array)
    elif case == "dimension_mismatch":
        moving = tmp_path / "volume.nii.gz"
        _image(moving, _blob((8, 8, 8), (4, 4, 4)))
    elif case == "bad_checkpoint":
        checkpoint = tmp_path / "model.pt"
        checkpoint.write_bytes(b"garbage")
    code = main(["register", "--method", "gradicon", "--checkpoint", str(checkpoint), "--moving", str(moving),
                 "--fixed", str(good), "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code == 2
    assert error.startswith("error: ") and (str(moving) in error or str(checkpoint) in error)
    assert not (tmp_path / "out").exists()
