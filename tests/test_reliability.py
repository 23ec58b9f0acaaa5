"""Reliability: no silent wrong numbers, no lost training, no out-of-memory kill halfway.

Bad input to the CLI is in tests/test_cli.py; determinism in tests/test_workflow.py and
tests/test_training.py. Here: the readers and metrics below the CLI, training killed with
SIGKILL and restarted, stale checkpoints, the memory check and bad workflow configs.
"""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import yaml
from helpers import copy_workflow

from equireg import memory, metrics, training
from equireg.cli import main
from equireg.data import io, loaders
from equireg.transforms import translation
from equireg.wrappers import DisplacementField

ROOT = Path(__file__).resolve().parents[1]


# --- readers and metrics ----------------------------------------------------------------------------

def test_nifti_that_itk_reads_wrongly_is_rejected(tmp_path):
    """ITK reads NaN/Inf voxels and a truncated voxel block of a NIfTI file as zeros, silently."""
    array = np.random.default_rng(0).random((6, 7, 8)).astype(np.float64)
    for name in ("whole.nii", "whole.nii.gz"):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / name))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(io.read_image(tmp_path / name)), array)
    array[1, 2, 3] = -np.inf
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / "inf.nii"))
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "inf.nii")))[1, 2, 3] == 0  # ITK alone
    with pytest.raises(io.ImageError, match="inf.nii: 1 voxels are NaN or infinite"):
        io.read_image(tmp_path / "inf.nii")
    data = (tmp_path / "whole.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(data[:-100])
    with pytest.raises(io.ImageError, match=r"cut.nii: truncated: the header describes 2688 bytes of voxel data, "
                                            r"the file holds 2588"):
        io.read_image(tmp_path / "cut.nii")


def test_header_only_shape_and_colour_pictures(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 6, 7), np.float32)), str(tmp_path / "v.mha"))
    assert io.read_shape(tmp_path / "v.mha") == (5, 6, 7)
    with pytest.raises(io.ImageError, match="v.mha: 3-D image; expected 2-D"):
        io.read_shape(tmp_path / "v.mha", dimensions=(2,))
    rgba = np.random.default_rng(0).integers(0, 255, (10, 12, 4)).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(rgba, isVector=True), str(tmp_path / "c.png"))
    np.testing.assert_allclose(sitk.GetArrayFromImage(io.read_image(tmp_path / "c.png")), rgba[..., :3].mean(-1),
                               atol=1e-4)  # alpha is not a colour


def test_empty_label_map_and_outside_landmarks_are_errors(tmp_path):
    with pytest.raises(ValueError, match="no foreground label"):
        metrics.dice_per_label(np.zeros((4, 4), int), np.zeros((4, 4), int))
    points = np.array([[1.0, 1.0], [2.0, 9.5]])
    with pytest.raises(ValueError, match="1 fixed landmarks lie outside the image"):
        metrics.landmark_errors_mm(translation([0.0, 0.0]), points, points.clip(0, 7), (8, 8), (8, 8), (1.0, 1.0))
    (tmp_path / "marks.txt").write_text("10 10 10\n300 10 10\n")
    with pytest.raises(ValueError, match=r"marks.txt: 1 landmarks outside an image of shape \(94, 256, 256\) \(z, y, x\), the first in row 2"):
        loaders.read_dirlab_landmarks(tmp_path / "marks.txt", count=2, shape=(94, 256, 256))
    (tmp_path / "keys.csv").write_text("1,2,3\n4,5,-1\n")
    with pytest.raises(ValueError, match="keys.csv: 1 keypoints outside .* the first in row 2"):
        loaders.read_nlst_keypoints(tmp_path / "keys.csv", shape=(8, 8, 8))
    with pytest.raises(FileNotFoundError, match="absent.txt"):
        loaders.read_dirlab_landmarks(tmp_path / "absent.txt")


# --- training killed and restarted --------------------------------------------------------------------

TRAINER = textwrap.dedent('''
    """Train a tiny network for 30 steps; print the first step this process trained. With a second
    argument N, stop at step N's batch, announce it in the file `blocked`, and wait to be killed."""
    import pathlib, sys, time
    import torch
    from equireg import training
    from equireg.transforms import identity_map, translation, warp
    from equireg.wrappers import DisplacementField

    torch.set_num_threads(1)
    first = []

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Sequential(torch.nn.Conv2d(2, 8, 3, padding=1), torch.nn.ReLU(),
                                            torch.nn.Conv2d(8, 2, 3, padding=1))

        def forward(self, moving, fixed):
            return self.conv(torch.cat([moving, fixed], 1)) / 10

    def batches(step):
        first.append(step)
        if len(sys.argv) > 2 and step == int(sys.argv[2]):
            pathlib.Path(sys.argv[1], "blocked").touch()
            time.sleep(600)
        generator = torch.Generator().manual_seed(step)
        fixed = torch.nn.functional.avg_pool2d(torch.rand(2, 1, 16, 16, generator=generator), 3, 1, 1)
        shift = (torch.rand(2, generator=generator) - 0.5) * 0.1
        return warp(fixed, translation(-shift)(identity_map((16, 16)))), fixed

    torch.manual_seed(0)
    net = DisplacementField(Tiny())
    stages = [training.Stage("diffusion", 12, 1e-3, 0.1, {"name": "ssd"}),
              training.Stage("gradicon", 18, 1e-3, 0.5, {"name": "ssd"})]  # GradICON draws noise: RNG state
    training.train(net, stages, batches, sys.argv[1], seed=3, checkpoint_every=2, progress=False)
    torch.save(net.state_dict(), f"{sys.argv[1]}/weights.pt")
    print(first[0])
''')


def _trainer(tmp_path, directory, *block_at):
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    return [sys.executable, str(script), str(directory), *map(str, block_at)]


def test_sigkill_and_restart_gives_the_uninterrupted_weights_and_log(tmp_path):
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    reference = subprocess.run(_trainer(tmp_path, tmp_path / "reference"), capture_output=True, text=True,
                               env=environment, timeout=120)
    assert reference.returncode == 0, reference.stderr

    run = tmp_path / "killed"
    # killed inside the second stage, after GradICON has drawn noise (the RNG state must come back too),
    # at a step the trainer waits at: the same step on a fast or a slow machine
    process = subprocess.Popen(_trainer(tmp_path, run, 21), env=environment, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (run / "blocked").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (run / "blocked").exists(), "the trainer never reached step 21"
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    (run / "blocked").unlink()
    killed_at = torch.load(run / "checkpoint.pt", weights_only=False)["step"]
    assert killed_at == 20 and not (run / "weights.pt").exists()  # checkpoints every 2 steps

    resumed = subprocess.run(_trainer(tmp_path, run), capture_output=True, text=True, env=environment, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert int(resumed.stdout) >= killed_at and "starts over" not in resumed.stderr  # it resumed
    expected, got = torch.load(tmp_path / "reference" / "weights.pt"), torch.load(run / "weights.pt")
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    assert (run / "log.csv").read_bytes() == (tmp_path / "reference" / "log.csv").read_bytes()
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "log.csv", "weights.pt"]


# --- checkpoints of another run --------------------------------------------------------------------------

def _tiny(hidden=4):
    torch.manual_seed(0)
    return DisplacementField(_Convolutions(hidden))


class _Convolutions(torch.nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.conv = torch.nn.Sequential(torch.nn.Conv2d(2, hidden, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(hidden, 2, 3, padding=1))

    def forward(self, moving, fixed):
        return self.conv(torch.cat([moving, fixed], 1)) / 10


def _batches(step):
    generator = torch.Generator().manual_seed(step)
    fixed = torch.rand(1, 1, 16, 16, generator=generator)
    return fixed.roll(1, 2), fixed


STAGES = [training.Stage("diffusion", 4, 1e-3, 0.1, {"name": "ssd"})]


@pytest.mark.parametrize("change", ["schedule", "seed", "fingerprint", "network", "shorter"])
def test_checkpoint_of_another_run_is_not_resumed(tmp_path, change):
    """Resuming from a checkpoint of another configuration would silently mix two runs."""
    training.train(_tiny(), STAGES[:1] if change != "shorter" else
                   [training.Stage("diffusion", 8, 1e-3, 0.1, {"name": "ssd"})], _batches, tmp_path / "run",
                   seed=0, checkpoint_every=2, progress=False, fingerprint="data-v1")
    reference = _tiny()
    training.train(reference, STAGES, _batches, tmp_path / "fresh", seed=0, checkpoint_every=2, progress=False,
                   fingerprint="data-v1")
    stages, seed, fingerprint, net = STAGES, 0, "data-v1", _tiny()
    if change == "schedule":
        stages = [training.Stage("diffusion", 4, 2e-3, 0.1, {"name": "ssd"})]
    elif change == "seed":
        seed = 1
    elif change == "fingerprint":
        fingerprint = "data-v2"
    elif change == "network":
        net = _tiny(hidden=6)
    with pytest.warns(UserWarning, match="checkpoint.pt: not resumed, training starts over"):
        rows = training.train(net, stages, _batches, tmp_path / "run", seed=seed, checkpoint_every=2, progress=False,
                              fingerprint=fingerprint)
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    if change == "shorter":  # same settings otherwise: the fresh run's result
        assert all(torch.equal(p, q) for p, q in zip(net.parameters(), reference.parameters()))


def test_longer_last_stage_resumes(tmp_path):
    """Extending the last stage continues the run: the result is that of the longer run from scratch."""
    longer = [training.Stage("diffusion", 6, 1e-3, 0.1, {"name": "ssd"})]
    training.train(_tiny(), STAGES, _batches, tmp_path / "run", seed=0, checkpoint_every=2, progress=False)
    continued, reference = _tiny(), _tiny()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # it resumes: no "starts over"
        rows = training.train(continued, longer, _batches, tmp_path / "run", seed=0, checkpoint_every=2,
                              progress=False)
    training.train(reference, longer, _batches, tmp_path / "fresh", seed=0, checkpoint_every=2, progress=False)
    assert len(rows) == 6 and all(torch.equal(p, q) for p, q in zip(continued.parameters(), reference.parameters()))


def test_corrupt_training_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"\x80\x04 truncated")
    with pytest.raises(ValueError, match="checkpoint.pt: corrupt or unreadable checkpoint .*delete it"):
        training.train(_tiny(), STAGES, _batches, tmp_path, progress=False)
    torch.save({"model": {}}, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"checkpoint.pt: not a training checkpoint \(lacks \['log', 'optimizer'"):
        training.train(_tiny(), STAGES, _batches, tmp_path, progress=False)


# --- memory ------------------------------------------------------------------------------------------------

def _pair(tmp_path, shape=(24, 24)):
    array = np.random.default_rng(0).random(shape).astype(np.float32)
    for name in ("fixed.mha", "moving.mha"):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / name))
    return str(tmp_path / "moving.mha"), str(tmp_path / "fixed.mha")


@pytest.mark.parametrize("command", ["register", "equivariance"])
def test_too_large_for_memory_fails_before_reading_voxels(tmp_path, monkeypatch, capsys, command):
    moving, fixed = _pair(tmp_path)
    monkeypatch.setattr(memory, "available_bytes", lambda: 200 * 2**20)

    def no_voxels(*args, **kwargs):
        raise AssertionError("voxels read before the memory check")

    monkeypatch.setattr(io, "read_image", no_voxels)
    arguments = [command, "--method", "carl", "--checkpoint", "none", "--moving", moving, "--fixed", fixed]
    code = main(arguments + (["--out", str(tmp_path / "out")] if command == "register" else []))
    error = capsys.readouterr().err
    print(error)
    assert code == 2 and not (tmp_path / "out").exists()
    assert f"error: {fixed}: " in error and "24x24 image" in error and "carl" in error
    assert re.search(r"needs an estimated [\d.]+ GiB of memory but only 0.20 GiB is available", error)


def test_estimates_scale_with_voxels_and_fit_available_memory():
    assert memory.network_bytes("carl", (128,) * 3) == pytest.approx(8 * memory.network_bytes("carl", (64,) * 3))
    assert memory.network_bytes("not_measured", (64, 64)) == max(
        memory.network_bytes(method, (64, 64)) for method, d in memory.NETWORK_BYTES_PER_VOXEL if d == 2)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < memory.available_bytes() <= total
    memory.require(2**20, "a small job")  # fits on any machine this runs on
    with pytest.raises(ValueError, match=r"huge.nii: registering .* needs an estimated .* GiB of memory but only"):
        memory.require(memory.network_bytes("carl", (4096,) * 3), "huge.nii: registering a volume")


@pytest.mark.parametrize("method,dimension,size", [("gradicon", 2, 256), ("carl", 2, 192)])
def test_estimate_covers_the_measured_peak(method, dimension, size):
    """The table is conservative: a fresh process's measured peak growth stays below the estimate."""
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "memory_calibration.py"), method,
                             str(dimension), str(size)],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)["bytes"]
    estimate = memory.network_bytes(method, (size,) * dimension) + memory.FIXED_BYTES  # as memory.require adds
    print(f"{method} {dimension}-D {size}: measured {measured / 2**20:.1f} MiB, estimate {estimate / 2**20:.1f} MiB")
    assert 0 < measured <= estimate


# --- workflow configuration ----------------------------------------------------------------------------------

def _workflow_copy(tmp_path, edit=None):
    copy_workflow(tmp_path)
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    if edit:
        edit(config)
    (tmp_path / "edited.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def _dry_run(directory, *extra):
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", "edited.yaml",
                           *extra], cwd=directory, capture_output=True, text=True, timeout=300)


def _typo(config):
    config["presets"]["smoke"]["retina"]["warp_per_image"] = 2


def _string_for_number(config):
    config["presets"]["smoke"]["training"]["gradicon"]["stages"][0]["lr"] = "fast"


def _unknown_method(config):
    config["presets"]["smoke"]["lung"]["methods"].append("gradicon_v2")


@pytest.mark.parametrize("edit,message", [
    (_typo, "Additional properties are not allowed ('warp_per_image' was unexpected)"),
    (_string_for_number, "'fast' is not of type 'number'"),
    (_unknown_method, "'gradicon_v2' is not a registered method; registered: carl, carl_draft"),
])
def test_bad_config_file_fails_the_dry_run(tmp_path, edit, message):
    result = _dry_run(_workflow_copy(tmp_path, edit), "--config", "preset=smoke")
    print(result.stderr[-1500:])
    assert result.returncode != 0 and message in result.stdout + result.stderr
    assert "Job stats" not in result.stdout  # nothing was planned


def test_missing_dataset_path_fails_the_dry_run(tmp_path):
    def edit(config):
        config["datasets"]["drive"] = str(tmp_path / "no_DRIVE_here")

    result = _dry_run(_workflow_copy(tmp_path / "wf", edit), "--config", "preset=smoke")
    assert result.returncode != 0 and "no_DRIVE_here" in result.stdout + result.stderr
