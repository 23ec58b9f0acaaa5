"""`equireg register` end to end on small files, and its errors on bad input."""

import gzip
import json
import re
import struct
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

import torch

from equireg import cli, registration
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


def test_help_lists_exactly_the_subcommands(capsys):
    result = subprocess.run([sys.executable, "-m", "equireg", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    listed = re.search(r"\{([a-z,]+)\}", result.stdout).group(1).split(",")
    parser_commands = cli.build_parser()._subparsers._group_actions[0].choices
    assert listed == list(parser_commands) == list(cli.SUBCOMMANDS) == ["register", "evaluate", "equivariance"]
    documented = re.search(r"``equireg ([a-z |]+)``", cli.__doc__).group(1).split(" | ")
    assert documented == listed
    assert "toy" not in result.stdout
    for command in listed:
        with pytest.raises(SystemExit) as exit_status:
            main([command, "--help"])
        assert exit_status.value.code == 0 and f"usage: equireg {command}" in capsys.readouterr().out


def _truncated(path, source, fraction=0.5):
    data = source.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])
    return path


def _model_file(path, method, dimension=2, **options):
    from equireg import training

    net, _ = training.load_model(None, method, dimension, options)
    training.save_model(path, net, method, dimension, options, [24, 24])
    return path


def _bad_register_input(tmp_path, good, case):
    """(moving, checkpoint, extra arguments, the file or key the error must name, what it must say)."""
    array = _blob((24, 24), (12, 12))
    if case == "missing":
        return tmp_path / "absent.nii.gz", "none", [], "absent.nii.gz", "no such file"
    if case == "directory":
        (tmp_path / "folder.nii.gz").mkdir()
        return tmp_path / "folder.nii.gz", "none", [], "folder.nii.gz", "not a file"
    if case == "corrupt":
        moving = tmp_path / "corrupt.nii.gz"
        moving.write_bytes(good.read_bytes()[:40])
        return moving, "none", [], "corrupt.nii.gz", ""
    if case == "truncated_nifti":  # ITK alone reads the missing voxels as zeros, silently
        return _truncated(tmp_path / "cut.nii.gz", good), "none", [], "cut.nii.gz", "truncated"
    if case == "truncated_mha":
        source = tmp_path / "whole.mha"
        _image(source, array)
        return _truncated(tmp_path / "cut.mha", source), "none", [], "cut.mha", "voxel data cannot be read"
    if case in ("nan", "inf", "nan_nifti"):
        array[3, 4] = np.nan if case != "inf" else np.inf
        moving = tmp_path / ("bad.nii.gz" if case == "nan_nifti" else "bad.mha")  # ITK reads NaN in NIfTI as 0
        _image(moving, array)
        return moving, "none", [], moving.name, "1 voxels are NaN or infinite"
    if case == "four_d":
        moving = tmp_path / "series.nii.gz"
        sitk.WriteImage(sitk.JoinSeries([sitk.GetImageFromArray(_blob((6, 6, 6), (3, 3, 3)))] * 3), str(moving))
        return moving, "none", [], "series.nii.gz", "4-D image; expected 2-D or 3-D"
    if case == "one_d":
        moving = tmp_path / "line.nrrd"
        moving.write_bytes(b"NRRD0004\ntype: float\ndimension: 1\nsizes: 10\nencoding: raw\nendian: little\n\n"
                           + np.arange(10, dtype="<f4").tobytes())
        return moving, "none", [], "line.nrrd", "1-D image; expected 2-D or 3-D"
    if case == "vector":
        moving = tmp_path / "field.mha"
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((24, 24, 24, 3), np.float32), isVector=True), str(moving))
        return moving, "none", [], "field.mha", "3 components per voxel"
    if case == "dimension_mismatch":
        moving = tmp_path / "volume.nii.gz"
        _image(moving, _blob((8, 8, 8), (4, 4, 4)))
        return moving, "none", [], "volume.nii.gz", "3-D moving image"
    if case == "garbage_checkpoint":
        (tmp_path / "model.pt").write_bytes(b"garbage")
        return good, tmp_path / "model.pt", [], "model.pt", "corrupt"
    if case == "truncated_checkpoint":
        whole = _model_file(tmp_path / "whole.pt", "gradicon", levels=1)
        return good, _truncated(tmp_path / "cut.pt", whole), [], "cut.pt", "corrupt"
    if case == "other_method_checkpoint":
        return good, _model_file(tmp_path / "vxm.pt", "voxelmorph"), [], "vxm.pt", "method 'voxelmorph', not 'gradicon'"
    if case == "option_with_checkpoint":  # used to be ignored without a word
        model = _model_file(tmp_path / "model.pt", "gradicon", levels=1)
        return good, model, ["--option", "levels=2"], "--option levels=2", "model.pt brings its own"
    if case == "bad_threads":
        return good, "none", ["--threads", "0"], "--threads 0", "at least 1"
    if case == "unknown_option":
        return good, "none", ["--option", "level=2"], "options {'level': 2}", "does not take"
    if case == "bad_shape":
        return good, "none", ["--shape", "24"], "--shape 24", "expected 2 sizes"
    if case == "out_is_a_file":
        (tmp_path / "out").write_text("")
        return good, "none", [], "--out", "not a directory"
    raise AssertionError(case)


BAD_REGISTER_INPUTS = ["missing", "directory", "corrupt", "truncated_nifti", "truncated_mha", "nan", "inf", "nan_nifti",
                       "four_d", "one_d", "vector", "dimension_mismatch", "garbage_checkpoint", "truncated_checkpoint",
                       "other_method_checkpoint", "option_with_checkpoint", "bad_threads", "unknown_option", "bad_shape",
                       "out_is_a_file"]


@pytest.mark.parametrize("case", BAD_REGISTER_INPUTS)
def test_bad_input_is_a_clear_error_without_output(tmp_path, capsys, case):
    good = tmp_path / "good.nii.gz"
    _image(good, _blob((24, 24), (12, 12)))
    moving, checkpoint, extra, names, says = _bad_register_input(tmp_path, good, case)
    code = main(["register", "--method", "gradicon", "--checkpoint", str(checkpoint), "--moving", str(moving),
                 "--fixed", str(good), "--out", str(tmp_path / "out"), *extra])
    error = capsys.readouterr().err
    print(case, "->", error.strip())
    assert code == 2
    assert error.startswith("error: ") and names in error and says in error
    assert not (tmp_path / "out").is_dir()


@pytest.mark.parametrize("case", ["missing", "only_moving", "size_mismatch", "dimension_mismatch", "nan", "shift_count",
                                  "option_with_checkpoint"])
def test_equivariance_bad_input(tmp_path, capsys, case):
    good = tmp_path / "good.mha"
    _image(good, _blob((24, 24), (12, 12)))
    moving, extra, names, says = str(good), [], None, None
    if case == "missing":
        moving, names, says = str(tmp_path / "absent.mha"), "absent.mha", "no such file"
    elif case == "size_mismatch":
        moving, names, says = str(_image_path(tmp_path / "wide.mha", _blob((24, 32), (12, 12)))), "wide.mha", "differs"
    elif case == "dimension_mismatch":
        moving = str(_image_path(tmp_path / "cube.mha", _blob((8, 8, 8), (4, 4, 4))))
        names, says = "cube.mha", "3-D moving image"
    elif case == "nan":
        array = _blob((24, 24), (12, 12))
        array[0, 0] = np.nan
        moving, names, says = str(_image_path(tmp_path / "nan.mha", array)), "nan.mha", "NaN"
    elif case == "shift_count":
        extra, names, says = ["--shift-fixed", "1", "2", "3"], "--shift-fixed 1 2 3", "expected 2 voxel shifts"
    checkpoint = "none"
    if case == "option_with_checkpoint":
        checkpoint = str(_model_file(tmp_path / "model.pt", "gradicon", levels=1))
        names, says = "--option levels=1", "model.pt brings its own"
    arguments = ["equivariance", "--method", "gradicon", "--checkpoint", checkpoint, "--option", "levels=1",
                 "--moving", moving]
    if case == "only_moving":
        names, says = "--moving and --fixed", "go together"
    else:
        arguments += ["--fixed", str(good)]
    code = main(arguments + extra)
    error = capsys.readouterr().err
    print(case, "->", error.strip())
    assert code == 2 and error.startswith("error: ") and names in error and says in error


def test_failed_write_leaves_no_output(tmp_path, monkeypatch, capsys):
    """Both outputs appear together or not at all, even if the second write fails."""
    good = tmp_path / "good.nii.gz"
    _image(good, _blob((24, 24), (12, 12)))
    real_write = sitk.WriteImage

    def failing_write(image, path, *args, **kwargs):
        if ".displacement." in path:
            raise OSError(28, "No space left on device", path)
        return real_write(image, path, *args, **kwargs)

    monkeypatch.setattr(sitk, "WriteImage", failing_write)
    code = main(["register", "--method", "gradicon", "--checkpoint", "none", "--option", "levels=1",
                 "--moving", str(good), "--fixed", str(good), "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code == 2 and "No space left on device" in error
    assert list((tmp_path / "out").iterdir()) == []


def _image_path(path, array):
    _image(path, array)
    return path


# --- resampling to the network grid, the outputs, --threads and --progress ----------------------------

def _register(tmp_path, moving, fixed, *extra, method="classical"):
    options = ["--option", "deformable=none"] if method == "classical" else []
    return main(["register", "--method", method, "--checkpoint", "none", "--moving", str(moving), "--fixed", str(fixed),
                 "--out", str(tmp_path / "out"), *options, *extra])


def test_resampling_pads_to_keep_the_aspect_ratio_and_warns(tmp_path, monkeypatch, capsys):
    """A 257x221 slice meets a 98x70 network as 81x70 of image and 17 rows of padding, not stretched."""
    array = 1.0 + _blob((257, 221), (128, 110)) + np.linspace(0, 1, 221)[None]
    _image(tmp_path / "fixed.mha", array.astype(np.float32))
    seen = []
    real = registration._run_network
    monkeypatch.setattr(registration, "_run_network", lambda net, method, moving, fixed, *rest: seen.append(fixed) or
                        real(net, method, moving, fixed, *rest))
    assert _register(tmp_path, tmp_path / "fixed.mha", tmp_path / "fixed.mha", "--shape", "98", "70") == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert "--fixed" in captured.err and "257x221" in captured.err and "98x70" in captured.err
    assert "fills 81x70 of it, padded" in captured.err and summary["resampled"]
    spacing = summary["network_spacing_mm"]
    assert spacing[0] == pytest.approx(spacing[1]) == pytest.approx(220 / 69)
    network_input = seen[0][0, 0]
    assert network_input.shape == (98, 70)
    image_rows = (network_input > 0.05).any(1).nonzero()[:, 0]  # the padding is 0 after normalisation
    assert len(image_rows) in (80, 81, 82) and abs(image_rows.float().mean().item() - 48.5) < 1
    assert (network_input[:8] == 0).all() and (network_input[-8:] == 0).all()
    field = sitk.ReadImage(summary["outputs"]["displacement"])
    assert field.GetSize() == (221, 257)  # back on the fixed grid
    assert summary["displacement_mm"]["max"] < 0.5  # the same image: (nearly) the identity


def test_no_warning_when_the_images_are_on_the_network_grid(tmp_path, capsys):
    _image(tmp_path / "fixed.mha", _blob((24, 20), (12, 10)))
    assert _register(tmp_path, tmp_path / "fixed.mha", tmp_path / "fixed.mha", "--no-progress") == 0
    captured = capsys.readouterr()
    assert captured.err == "" and not json.loads(captured.out)["resampled"]


def _nifti_header(path):
    with gzip.open(path, "rb") as stream:
        header = stream.read(348)
    intent_code, datatype = struct.unpack("<hh", header[68:72])
    return intent_code, datatype


@pytest.mark.parametrize("dimension", [2, 3])
def test_outputs_nifti_field_and_a_transform_that_reproduces_the_warped_image(tmp_path, capsys, dimension):
    shape = (40, 36) if dimension == 2 else (20, 18, 16)
    spacing = (0.7, 1.3, 2.0)[:dimension]
    centre = [n / 2 for n in shape]
    fixed = _image(tmp_path / "fixed.nii.gz", _blob(shape, centre) + 0.5 * _blob(shape, [c - 4 for c in centre]),
                   spacing, (10.0, -5.0, 3.0)[:dimension])
    moving_centre = [c + 2 for c in centre]
    # the moving image on another grid (origin, size): resampled in physical space
    moving = _image(tmp_path / "moving.nii.gz", _blob(shape, moving_centre) + 0.5 * _blob(shape, [c - 4 for c in
                    moving_centre]), spacing, (11.0, -4.0, 3.5)[:dimension])
    network_shape = ["32", "30"] if dimension == 2 else ["16", "16", "14"]  # not the fixed grid
    assert _register(tmp_path, tmp_path / "moving.nii.gz", tmp_path / "fixed.nii.gz", "--shape", *network_shape) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["resampled"]
    outputs = summary["outputs"]
    # 3-D: NIFTI_INTENT_DISPVECT; 2-D: a vector as ITK writes one (ITK misreads 2-D DISPVECT); float32
    assert _nifti_header(outputs["displacement"]) == (1006 if dimension == 3 else 1007, 16)
    field = sitk.ReadImage(outputs["displacement"])  # what SimpleITK, Slicer and ANTs see
    assert field.GetDimension() == dimension and field.GetNumberOfComponentsPerPixel() == dimension
    assert field.GetPixelID() == sitk.sitkVectorFloat32
    for a, b in zip((field.GetOrigin(), field.GetSpacing(), field.GetSize()),
                    (fixed.GetOrigin(), fixed.GetSpacing(), fixed.GetSize())):
        np.testing.assert_allclose(a, b)
    from equireg.data.io import read_displacement

    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_displacement(outputs["displacement"])),
                                  sitk.GetArrayFromImage(field))
    # on disk: 3-D vectors follow NIfTI's RAS convention (x and y of ITK's LPS negated), 2-D ones ITK's LPS
    with gzip.open(outputs["displacement"], "rb") as stream:
        raw = stream.read()
    offset = int(struct.unpack("<f", raw[108:112])[0])
    on_disk = np.frombuffer(raw[offset:], "<f4").reshape(dimension, *shape)  # components slowest
    lps = sitk.GetArrayFromImage(field)
    for component in range(dimension):
        sign = -1 if component < 2 and dimension == 3 else 1
        np.testing.assert_array_equal(on_disk[component], sign * lps[..., component])
    transform = sitk.ReadTransform(outputs["transform"])
    assert transform.GetDimension() == dimension
    # the field SimpleITK reads equals the transform's at every voxel (float32 on disk, float64 in the .h5)
    stored = sitk.GetArrayFromImage(sitk.DisplacementFieldTransform(transform).GetDisplacementField())
    np.testing.assert_allclose(sitk.GetArrayFromImage(field), stored, rtol=1e-6, atol=1e-6)
    warped = sitk.ReadImage(outputs["warped"])
    again = sitk.Resample(sitk.Cast(moving, sitk.sitkFloat32), fixed, transform, sitk.sitkLinear, 0.0,
                          sitk.sitkFloat32)
    np.testing.assert_allclose(sitk.GetArrayFromImage(again), sitk.GetArrayFromImage(warped), atol=1e-6)
    # and it registers: the blobs sit 2 voxels per axis plus the origin difference apart (x, y, z in mm)
    expected = 2 * np.asarray(spacing) + np.subtract((11.0, -4.0, 3.5), (10.0, -5.0, 3.0))[:dimension]
    np.testing.assert_allclose(lps[tuple(int(c) for c in centre)], expected, atol=0.1)
    error_before = np.abs(sitk.GetArrayFromImage(sitk.Resample(moving, fixed)) - sitk.GetArrayFromImage(fixed)).mean()
    error_after = np.abs(sitk.GetArrayFromImage(warped) - sitk.GetArrayFromImage(fixed)).mean()
    assert error_after < 0.2 * error_before, (error_before, error_after)


def test_read_displacement_reads_2d_fields_written_with_the_nifti_displacement_intent(tmp_path):
    """A 2-D intent-1006 file with RAS vectors (equireg 0.1.0 wrote those): SimpleITK alone scrambles its
    signs, read_displacement gives the LPS field back."""
    from equireg.data.io import read_displacement

    rng = np.random.default_rng(0)
    lps = rng.normal(size=(7, 5, 2)).astype(np.float32)
    ras = sitk.GetImageFromArray(lps * np.float32([-1, -1]), isVector=True)
    path = tmp_path / "legacy.nii"
    sitk.WriteImage(ras, str(path))
    data = bytearray(path.read_bytes())
    data[68:70] = struct.pack("<h", 1006)
    path.write_bytes(bytes(data))
    assert not np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), lps)  # ITK's own reading
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_displacement(path)), lps)


def test_threads_set_torch_sitk_and_the_classical_method(tmp_path, monkeypatch, capsys):
    _image(tmp_path / "fixed.mha", _blob((24, 20), (12, 10)))
    _image(tmp_path / "moving.mha", _blob((24, 20), (13, 9)))
    torch_threads, sitk_threads = torch.get_num_threads(), sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    built = []
    real_load = cli._load
    monkeypatch.setattr(cli, "_load", lambda args, dimension: built.append(real_load(args, dimension)[0]) or (
        built[-1], {"input_shape": None}))
    try:
        assert _register(tmp_path, tmp_path / "moving.mha", tmp_path / "fixed.mha", "--threads", "3") == 0
        assert torch.get_num_threads() == 3 and sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == 3
        assert built[0].threads == 3
    finally:
        torch.set_num_threads(torch_threads)
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(sitk_threads)
    capsys.readouterr()
    assert _register(tmp_path, tmp_path / "moving.mha", tmp_path / "fixed.mha") == 0
    assert built[1].threads == 1  # without --threads the classical method stays single-threaded


def test_progress_bar_on_stderr_only_when_asked(tmp_path, capsys):
    _image(tmp_path / "fixed.mha", _blob((24, 20), (12, 10)))
    _image(tmp_path / "moving.mha", _blob((24, 20), (13, 9)))
    assert _register(tmp_path, tmp_path / "moving.mha", tmp_path / "fixed.mha", "--progress") == 0
    captured = capsys.readouterr()
    assert "classical affine (correlation)" in captured.err and json.loads(captured.out)["metric"] == "correlation"
    assert _register(tmp_path, tmp_path / "moving.mha", tmp_path / "fixed.mha") == 0  # stderr is no terminal here
    assert "classical" not in capsys.readouterr().err


def test_moving_image_coarser_along_one_axis_only_is_resampled(tmp_path, capsys):
    """Anti-aliasing smooths only the axes the network grid coarsens (ITK takes no zero sigma)."""
    def blob(size_xy, spacing_xy):  # one physical blob, sampled on the given grid
        y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(size_xy[::-1], spacing_xy[::-1])], indexing="ij")
        return np.exp(-((x - 10) ** 2 + (y - 12) ** 2) / 18).astype(np.float32)

    fixed = _image(tmp_path / "fixed.mha", blob((20, 24), (1.0, 1.0)))
    _image(tmp_path / "moving.mha", blob((10, 48), (2.0, 0.5)), (2.0, 0.5))  # y finer, x coarser than fixed
    assert _register(tmp_path, tmp_path / "moving.mha", tmp_path / "fixed.mha") == 0
    captured = capsys.readouterr()
    assert "--moving" in captured.err and "--fixed" not in captured.err
    warped = sitk.GetArrayFromImage(sitk.ReadImage(json.loads(captured.out)["outputs"]["warped"]))
    assert np.abs(warped - sitk.GetArrayFromImage(fixed))[:, :19].max() < 0.05  # x = 19 lies outside the moving


def test_device_and_precision_flags(tmp_path, capsys):
    shape = (40, 36)
    _image(tmp_path / "fixed.nii.gz", _blob(shape, (20, 18)))
    _image(tmp_path / "moving.nii.gz", _blob(shape, (21, 17)))
    args = ["register", "--method", "voxelmorph", "--checkpoint", "none", "--moving", str(tmp_path / "moving.nii.gz"),
            "--fixed", str(tmp_path / "fixed.nii.gz")]
    assert main([*args, "--out", str(tmp_path / "out"), "--device", "cpu", "--precision", "bf16"]) == 0
    assert (tmp_path / "out" / "transform.h5").exists()
    capsys.readouterr()
    if not torch.cuda.is_available():
        assert main([*args, "--out", str(tmp_path / "gpu"), "--device", "cuda"]) == 2
        assert "no CUDA device" in capsys.readouterr().err and not (tmp_path / "gpu").exists()


# --- instance optimisation: --io-steps ----------------------------------------------------------------

def _trained_model_file(path, stage=None):
    """A GradICON model file that records the loss it was trained with, as training writes them."""
    from equireg import training

    net, _ = training.load_model(None, "gradicon", 2, {"levels": 1})
    stage = stage or training.Stage("gradicon", 1, 1e-3, 0.5, {"name": "ssd"})
    training.save_model(path, net, "gradicon", 2, {"levels": 1}, [24, 24], final_stage=stage)
    return path


def test_io_steps_fine_tune_on_the_pair_and_leave_the_checkpoint_unchanged(tmp_path, capsys):
    fixed, moving = tmp_path / "fixed.mha", tmp_path / "moving.mha"
    _image(fixed, _blob((24, 24), (12, 12)))
    _image(moving, _blob((24, 24), (14, 10)))
    model = _trained_model_file(tmp_path / "model.pt")
    saved = model.read_bytes()
    errors = {}
    for steps in (0, 20):
        out = tmp_path / f"io{steps}"
        assert main(["register", "--method", "gradicon", "--checkpoint", str(model), "--moving", str(moving),
                     "--fixed", str(fixed), "--out", str(out), "--io-steps", str(steps), "--io-lr", "1e-3",
                     "--progress"]) == 0
        captured = capsys.readouterr()
        summary = json.loads(captured.out)
        assert ("instance optimisation" in captured.err) == bool(steps)  # the progress bar
        assert summary.get("instance_optimization") == ({"steps": 20, "lr": 0.001} if steps else None)
        warped = sitk.GetArrayFromImage(sitk.ReadImage(summary["outputs"]["warped"]))
        errors[steps] = float(np.square(warped - _blob((24, 24), (12, 12))).mean())
    # the written outputs are the fine-tuned network's: it moved the blob towards the fixed one
    assert errors[20] < 0.2 * errors[0], errors
    assert model.read_bytes() == saved


@pytest.mark.parametrize("case", ["negative", "learning rate", "classical", "no checkpoint", "old model file"])
def test_io_steps_errors(tmp_path, capsys, case):
    _image(tmp_path / "fixed.mha", _blob((24, 24), (12, 12)))
    method, checkpoint, extra = "gradicon", str(_trained_model_file(tmp_path / "model.pt")), ["--io-steps", "5"]
    if case == "negative":
        extra, expected = ["--io-steps", "-1"], "--io-steps -1: expected 0 or more"
    elif case == "learning rate":
        extra, expected = ["--io-steps", "5", "--io-lr", "0"], "--io-lr 0.0: expected a positive learning rate"
    elif case == "classical":
        method, checkpoint, expected = "classical", "none", "classical has no weights to fine-tune"
    elif case == "no checkpoint":
        checkpoint, expected = "none", "give its --checkpoint"
    else:
        checkpoint = str(_model_file(tmp_path / "old.pt", "gradicon", levels=1))
        expected = "old.pt does not record the loss it was trained with"
    assert main(["register", "--method", method, "--checkpoint", checkpoint, "--moving", str(tmp_path / "fixed.mha"),
                 "--fixed", str(tmp_path / "fixed.mha"), "--out", str(tmp_path / "out"), *extra]) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
