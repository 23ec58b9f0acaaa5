"""equireg.registration from Python: the pipeline of ``equireg register`` without argparse."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from equireg.cli import main
from equireg.registration import register_pair
from equireg.training import load_model


def _image(path, shape, centre, spacing, origin):
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"))
    image = sitk.GetImageFromArray(np.exp(-sum((g - c) ** 2 for g, c in zip(grid, centre)) / 18).astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))


def test_register_pair_from_python_is_what_the_cli_computes(tmp_path, capsys):
    fixed, moving = tmp_path / "fixed.nii.gz", tmp_path / "moving.nii.gz"
    _image(fixed, (40, 36), (20, 18), (0.7, 1.3), (10.0, -5.0))
    _image(moving, (40, 36), (22, 17), (0.7, 1.3), (11.0, -4.0))  # another origin: resampled
    net, _ = load_model(None, "gradicon", 2, {"levels": 1})
    with pytest.warns(UserWarning, match="resampled from 40x36"):
        registration = register_pair(net, "gradicon", moving, fixed, shape=(32, 30))
    outputs = registration.write(tmp_path / "python")

    assert main(["register", "--method", "gradicon", "--checkpoint", "none", "--option", "levels=1", "--moving",
                 str(moving), "--fixed", str(fixed), "--out", str(tmp_path / "cli"), "--shape", "32", "30"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary.pop("checkpoint") is None and summary.pop("outputs").keys() == outputs.keys()
    assert summary == registration.summary and summary["resampled"]
    assert summary["displacement_mm"]["max"] < 1e-4  # a fresh GradICON is the identity in physical space
    for name in ("warped", "displacement"):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(outputs[name])),
                                      sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "cli" / f"{name}.nii.gz"))))
