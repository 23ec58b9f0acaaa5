"""`equireg evaluate`: the suite's metrics (Dice per label, TRE in mm, % folds) on a user's own pair,
and clear errors without output for bad label maps and landmark files."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from equireg.cli import main

SHAPE = (40, 36)
SPACING = (0.8, 1.2)           # x, y (mm)
FIXED_ORIGIN = (5.0, -3.0)
MOVING_ORIGIN = (6.0, -2.0)    # 1 mm off in x and y: the headers' own offset counts physically
SHIFT = (3, -2)                # voxels, array order: moving content sits SHIFT further along


def _labels(shape, offset=(0, 0)):
    """Two discs (labels 1 and 2) and a bar (label 3); ``offset`` in voxels, array order."""
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"))
    y, x = grid[0] - offset[0], grid[1] - offset[1]
    labels = np.zeros(shape, np.uint8)
    labels[(y - 14) ** 2 + (x - 12) ** 2 < 36] = 1
    labels[(y - 26) ** 2 + (x - 22) ** 2 < 25] = 2
    labels[(abs(y - 10) < 2) & (abs(x - 24) < 6)] = 3
    return labels


def _write(path, array, origin):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))
    return image


def _points(path, rows):
    path.write_text("x,y\n" + "".join(f"{x:.6f}, {y:.6f}\n" for x, y in rows))
    return path


@pytest.fixture()
def pair(tmp_path):
    from scipy import ndimage

    fixed_labels, moving_labels = _labels(SHAPE), _labels(SHAPE, SHIFT)
    files = {}
    for side, labels, origin in (("fixed", fixed_labels, FIXED_ORIGIN), ("moving", moving_labels, MOVING_ORIGIN)):
        image = ndimage.gaussian_filter(np.asarray([0.0, 1.0, 0.6, 0.8])[labels], 1.0).astype(np.float32)
        files[side] = tmp_path / f"{side}.nii.gz"
        _write(files[side], image, origin)
        files[f"{side}_labels"] = tmp_path / f"{side}_labels.nii.gz"
        _write(files[f"{side}_labels"], labels, origin)
    # landmarks: the disc centres and a bar end, in physical x, y (mm)
    index = np.array([[14.0, 12.0], [26.0, 22.0], [10.0, 29.0]])  # array order
    physical = {side: (index + (np.asarray(SHIFT) if side == "moving" else 0))[:, ::-1] * SPACING + origin
                for side, origin in (("fixed", FIXED_ORIGIN), ("moving", MOVING_ORIGIN))}
    for side in ("fixed", "moving"):
        files[f"{side}_landmarks"] = _points(tmp_path / f"{side}_points.csv", physical[side])
    return files


def _evaluate(files, *extra, labels=True, landmarks=True, out=None):
    arguments = ["evaluate", "--method", "classical", "--checkpoint", "none", "--option", "deformable=none",
                 "--moving", str(files["moving"]), "--fixed", str(files["fixed"])]
    if labels:
        arguments += ["--moving-labels", str(files["moving_labels"]), "--fixed-labels", str(files["fixed_labels"])]
    if landmarks:
        arguments += ["--moving-landmarks", str(files["moving_landmarks"]),
                      "--fixed-landmarks", str(files["fixed_landmarks"])]
    if out:
        arguments += ["--out", str(out)]
    return main(arguments + list(extra))


def test_dice_tre_and_folds_of_a_registered_pair(pair, tmp_path, capsys):
    assert _evaluate(pair, out=tmp_path / "out") == 0
    result = json.loads(capsys.readouterr().out)
    dice = result["dice"]
    assert set(dice["per_label"]) == {"1", "2", "3"}
    assert dice["unregistered_mean"] < 0.6, dice
    assert min(dice["per_label"].values()) > 0.85 and dice["mean"] > dice["unregistered_mean"] + 0.3, dice
    tre = result["tre_mm"]
    # unregistered: SHIFT voxels (scaled by the spacing) plus the 1 mm origin offset in x and y
    expected = np.hypot(SHIFT[1] * SPACING[0] + 1.0, SHIFT[0] * SPACING[1] + 1.0)
    assert tre["unregistered_mean"] == pytest.approx(expected)
    assert len(tre["per_landmark"]) == 3 and tre["mean"] < 0.3 and tre["max"] < 0.5, tre
    assert result["folds_percent"] == 0.0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["displacement.nii.gz", "transform.h5",
                                                                   "warped.nii.gz"]


def test_landmarks_alone_and_no_output_without_out(pair, tmp_path, capsys):
    assert _evaluate(pair, labels=False) == 0
    result = json.loads(capsys.readouterr().out)
    assert "tre_mm" in result and "dice" not in result and "outputs" not in result
    assert not (tmp_path / "out").exists()


def _bad(tmp_path, pair, case):
    """(changed files, evaluate keyword arguments, what the error must name, what it must say)."""
    if case == "missing_labels":
        return {"moving_labels": tmp_path / "absent.nii.gz"}, {}, "absent.nii.gz", "no such file"
    if case == "labels_shape":
        path = tmp_path / "small_labels.nii.gz"
        _write(path, _labels((30, 36)), FIXED_ORIGIN)
        return {"fixed_labels": path}, {}, "small_labels.nii.gz", "size 30x36"
    if case == "labels_dimension":
        path = tmp_path / "volume_labels.nii.gz"
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, *SHAPE), np.uint8)), str(path))
        return {"fixed_labels": path}, {}, "volume_labels.nii.gz", "3-D label map"
    if case == "labels_geometry":
        path = tmp_path / "moved_labels.nii.gz"
        _write(path, _labels(SHAPE), (50.0, 0.0))
        return {"fixed_labels": path}, {}, "moved_labels.nii.gz", "geometry"
    if case == "labels_not_integer":
        path = tmp_path / "soft_labels.nii.gz"
        _write(path, _labels(SHAPE).astype(np.float32) * 0.5, FIXED_ORIGIN)
        return {"fixed_labels": path}, {}, "soft_labels.nii.gz", "not a label map"
    if case == "labels_empty":
        paths = {}
        for side, origin in (("fixed", FIXED_ORIGIN), ("moving", MOVING_ORIGIN)):
            paths[f"{side}_labels"] = tmp_path / f"empty_{side}.nii.gz"
            _write(paths[f"{side}_labels"], np.zeros(SHAPE, np.uint8), origin)
        return paths, {}, "empty_fixed.nii.gz", "no foreground label"
    if case == "only_one_labels":
        return {}, {"only": "--fixed-labels"}, "--moving-labels and --fixed-labels", "go together"
    if case == "nothing_to_measure":
        return {}, {"labels": False, "landmarks": False}, "--moving-labels/--fixed-labels", "evaluate needs"
    if case == "missing_landmarks":
        return {"fixed_landmarks": tmp_path / "absent.csv"}, {}, "absent.csv", "no such file"
    if case == "landmark_columns":
        path = tmp_path / "three.txt"
        path.write_text("1 2 3\n4 5 6\n7 8 9\n")
        return {"moving_landmarks": path}, {}, "three.txt", "line 1: 3 coordinates; expected 2"
    if case == "landmark_text":
        path = tmp_path / "words.txt"
        path.write_text("1 2\n3 four\n")
        return {"moving_landmarks": path}, {}, "words.txt", "line 2: not a number"
    if case == "landmark_count":
        path = _points(tmp_path / "two.csv", [[10.0, 5.0], [12.0, 6.0]])
        return {"moving_landmarks": path}, {}, "two.csv", "2 landmarks but"
    if case == "landmark_outside":
        rows = np.loadtxt(pair["fixed_landmarks"], delimiter=",", skiprows=1)
        rows[1] = [500.0, 0.0]
        return {"fixed_landmarks": _points(tmp_path / "far.csv", rows)}, {}, "far.csv", "1 of 3 landmarks (rows 2)"
    if case == "landmarks_empty":
        path = tmp_path / "none.csv"
        path.write_text("# nothing here\n")
        return {"fixed_landmarks": path}, {}, "none.csv", "no landmarks"
    raise AssertionError(case)


BAD = ["missing_labels", "labels_shape", "labels_dimension", "labels_geometry", "labels_not_integer", "labels_empty",
       "only_one_labels", "nothing_to_measure", "missing_landmarks", "landmark_columns", "landmark_text",
       "landmark_count", "landmark_outside", "landmarks_empty"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_a_clear_error_without_output(pair, tmp_path, capsys, case):
    changed, how, names, says = _bad(tmp_path, pair, case)
    files = {**pair, **changed}
    only = how.pop("only", None)
    if only:
        arguments = ["evaluate", "--method", "classical", "--checkpoint", "none", "--moving", str(files["moving"]),
                     "--fixed", str(files["fixed"]), only, str(files["fixed_labels"]), "--out", str(tmp_path / "out")]
        code = main(arguments)
    else:
        code = _evaluate(files, out=tmp_path / "out", **how)
    captured = capsys.readouterr()
    print(case, "->", captured.err.strip())
    assert code == 2 and captured.out == ""
    assert captured.err.startswith("error: ") and names in captured.err and says in captured.err
    assert not (tmp_path / "out").exists()


def test_3d_pair_with_landmarks_and_labels(tmp_path, capsys):
    shape, spacing, shift = (20, 18, 16), (1.5, 1.0, 2.0), (2, -1, 1)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"))
    files = {}
    for side, offset in (("fixed", (0, 0, 0)), ("moving", shift)):
        distance = sum((g - c - o) ** 2 for g, c, o in zip(grid, (10, 8, 8), offset))
        other = sum((g - c - o) ** 2 for g, c, o in zip(grid, (5, 12, 6), offset))
        labels = (distance < 16).astype(np.uint8) + 2 * (other < 6).astype(np.uint8)
        image = sitk.GetImageFromArray(np.exp(-distance / 18) + 0.6 * np.exp(-other / 8))
        image.SetSpacing(spacing)
        label_image = sitk.GetImageFromArray(labels)
        label_image.SetSpacing(spacing)
        files[side], files[f"{side}_labels"] = tmp_path / f"{side}.mha", tmp_path / f"{side}_labels.mha"
        sitk.WriteImage(image, str(files[side]))
        sitk.WriteImage(label_image, str(files[f"{side}_labels"]))
        centres = np.array([[10, 8, 8], [5, 12, 6]]) + offset  # array order
        files[f"{side}_landmarks"] = tmp_path / f"{side}.txt"
        files[f"{side}_landmarks"].write_text("\n".join(" ".join(map(str, row)) for row in centres[:, ::-1] * spacing))
    assert _evaluate(files) == 0
    result = json.loads(capsys.readouterr().out)
    expected = np.linalg.norm(np.asarray(shift)[::-1] * spacing)
    assert result["tre_mm"]["unregistered_mean"] == pytest.approx(expected)
    assert result["tre_mm"]["max"] < 0.2 and result["dice"]["mean"] > 0.95, result  # unregistered: 4.4 mm
