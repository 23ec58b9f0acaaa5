"""Readers for datasets users bring: DRIVE, DIR-Lab 4DCT, DIR-Lab COPDGene, Learn2Reg NLST.

Conventions of every loader here:

* 3-D arrays are ``[z, y, x]`` (``np.fromfile(...).reshape(nz, ny, nx)`` for DIR-Lab, SimpleITK's
  ``GetArrayFromImage`` order for NIfTI); no axis is flipped.
* ``spacing`` is in millimetres per array axis, i.e. ``(z, y, x)``.
* Landmarks are ``float64 [K, 3]``, zero-based voxel indices in array-axis order ``(z, y, x)``:
  DIR-Lab's one-based ``x y z`` rows become ``(z - 1, y - 1, x - 1)``; NLST's zero-based ``x, y, z``
  keypoints become ``(z, y, x)``. TRE in mm is then ``|(p - q) * spacing|``.
* Missing or malformed files raise ``FileNotFoundError``/``ValueError`` naming the file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from equireg.transforms import inside

# case -> ((nz, ny, nx), (dz, dy, dx) mm); Castillo et al. 2009, dir-lab.com reference data.
DIRLAB_4DCT: dict[int, tuple[tuple[int, int, int], tuple[float, float, float]]] = {
    1: ((94, 256, 256), (2.5, 0.97, 0.97)),
    2: ((112, 256, 256), (2.5, 1.16, 1.16)),
    3: ((104, 256, 256), (2.5, 1.15, 1.15)),
    4: ((99, 256, 256), (2.5, 1.13, 1.13)),
    5: ((106, 256, 256), (2.5, 1.10, 1.10)),
    6: ((128, 512, 512), (2.5, 0.97, 0.97)),
    7: ((136, 512, 512), (2.5, 0.97, 0.97)),
    8: ((128, 512, 512), (2.5, 0.97, 0.97)),
    9: ((128, 512, 512), (2.5, 0.97, 0.97)),
    10: ((120, 512, 512), (2.5, 0.97, 0.97)),
}

# case -> ((nz, ny, nx), (dz, dy, dx) mm); Castillo et al. 2013. copd9 is 0.664 mm as in the
# DIR-Lab table and icon_registration's COPD_spacing (some copies of the table say 0.644).
_COPD = {1: (121, 0.625), 2: (102, 0.645), 3: (126, 0.652), 4: (126, 0.590), 5: (131, 0.647),
         6: (119, 0.633), 7: (112, 0.625), 8: (115, 0.586), 9: (116, 0.664), 10: (135, 0.742)}
DIRLAB_COPDGENE: dict[int, tuple[tuple[int, int, int], tuple[float, float, float]]] = {
    case: ((nz, 512, 512), (2.5, s, s)) for case, (nz, s) in _COPD.items()}


@dataclass(frozen=True)
class LandmarkPair:
    """A CT pair with corresponding landmarks (see the module conventions). Images are in HU
    (``float32``); masks, where the dataset has them, are ``float32`` in {0, 1}."""

    name: str
    fixed: np.ndarray
    moving: np.ndarray
    fixed_landmarks: np.ndarray
    moving_landmarks: np.ndarray
    spacing: tuple[float, ...]
    fixed_mask: np.ndarray | None = None
    moving_mask: np.ndarray | None = None


@dataclass(frozen=True)
class DriveImage:
    """One DRIVE image: RGB ``uint8 [584, 565, 3]``, field-of-view and vessel masks (bool)."""

    name: str
    image: np.ndarray
    fov: np.ndarray
    vessels: np.ndarray | None


# --- DIR-Lab ------------------------------------------------------------------------------------

def read_dirlab_image(path: str | Path, shape: Sequence[int], hu_offset: int | str = "auto") -> np.ndarray:
    """Read a headerless little-endian int16 DIR-Lab ``.img`` of ``shape`` ``(nz, ny, nx)`` as HU.

    ``hu_offset="auto"`` subtracts 1024 when the data are stored as HU + 1024 (recognised by the
    absence of air: the 1st percentile above -500); an int is subtracted as given.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DIR-Lab image not found: {path}")
    data = np.fromfile(path, dtype="<i2")
    expected = int(np.prod(shape))
    if data.size != expected:
        raise ValueError(f"{path}: {data.size} int16 values, expected {expected} for shape {tuple(shape)}")
    image = data.reshape(tuple(shape)).astype(np.float32)
    if hu_offset == "auto":
        offset = 1024 if np.percentile(image, 1) > -500 else 0
    elif isinstance(hu_offset, (int, np.integer)):
        offset = int(hu_offset)
    else:
        raise ValueError(f"hu_offset must be 'auto' or an int, got {hu_offset!r}")
    return image - offset


def _check_inside(path: Path, points: np.ndarray, shape: Sequence[int], what: str) -> None:
    """An error naming the file and the first row of ``points`` (``[K, 3]`` voxels) outside the image."""
    outside = np.flatnonzero(~inside(points, shape))
    if outside.size:
        raise ValueError(f"{path}: {outside.size} {what} outside an image of shape {tuple(shape)} (z, y, x), "
                         f"the first in row {outside[0] + 1}")


def read_dirlab_landmarks(path: str | Path, count: int | None = 300,
                          shape: Sequence[int] | None = None) -> np.ndarray:
    """Read one-based ``x y z`` voxel landmarks (tabs or spaces) as zero-based ``(z, y, x)`` rows.

    ``count`` checks the number of rows; ``shape`` (``(nz, ny, nx)``) checks they lie in the image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DIR-Lab landmark file not found: {path}")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.replace(",", " ").split()
        if not fields:
            continue
        try:
            values = [float(f) for f in fields]
        except ValueError:
            raise ValueError(f"{path}:{number}: not a number in {line.strip()!r}") from None
        if len(values) != 3:
            raise ValueError(f"{path}:{number}: expected 3 values (x y z), got {len(values)}")
        rows.append(values)
    points = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    if count is not None and len(points) != count:
        raise ValueError(f"{path}: {len(points)} landmarks, expected {count}")
    if points.size and points.min() < 1:
        raise ValueError(f"{path}: coordinates below 1, but DIR-Lab landmarks are one-based")
    points = points[:, ::-1] - 1.0
    if shape is not None:
        _check_inside(path, points, shape, "landmarks")
    return np.ascontiguousarray(points)


def _find_one(directory: Path, pattern: str, what: str) -> Path:
    """The single file under ``directory`` (recursively) whose name matches ``pattern`` (regex,
    case-insensitive): DIR-Lab packs differ in capitalisation and folder names."""
    regex = re.compile(pattern, re.IGNORECASE)
    hits = sorted(p for p in directory.rglob("*") if p.is_file() and regex.fullmatch(p.name))
    if not hits:
        raise FileNotFoundError(f"{what}: no file matching {pattern!r} under {directory}")
    if len(hits) > 1:
        raise ValueError(f"{what}: several files match {pattern!r}: {', '.join(map(str, hits))}")
    return hits[0]


def _case_directory(root: Path, case: int) -> Path:
    """``root/Case{N}Pack`` or ``root/Case{N}Deploy`` (any capitalisation), else ``root`` itself."""
    if not root.is_dir():
        raise FileNotFoundError(f"DIR-Lab root directory not found: {root}")
    regex = re.compile(rf"case{case}(pack|deploy)", re.IGNORECASE)
    matches = sorted(p for p in root.iterdir() if p.is_dir() and regex.fullmatch(p.name))
    return matches[0] if matches else root


def load_dirlab_4dct(root: str | Path, case: int, fixed_phase: int = 0, moving_phase: int = 50,
                     hu_offset: int | str = "auto") -> LandmarkPair:
    """DIR-Lab 4DCT case 1-10: phases ``T00`` (fixed) and ``T50`` (moving) with their 300 landmarks.

    ``root`` holds ``Case{N}Pack``/``Case{N}Deploy`` folders or is one of them. Found anywhere inside:
    ``case{N}_T{pp}_s.img`` or ``case{N}_T{pp}.img``, and ``Case{N}_300_T{pp}_xyz.txt`` or
    ``case{N}_dirLab300_T{pp}_xyz.txt`` (in ``ExtremePhases`` or ``extremePhases``).
    """
    if case not in DIRLAB_4DCT:
        raise ValueError(f"DIR-Lab 4DCT case must be 1-10, got {case}")
    shape, spacing = DIRLAB_4DCT[case]
    directory = _case_directory(Path(root), case)
    images, points = [], []
    for phase in (fixed_phase, moving_phase):
        tag = f"T{phase:02d}"
        images.append(read_dirlab_image(_find_one(directory, rf"case{case}_{tag}(_s)?\.img", f"case {case} {tag}"),
                                        shape, hu_offset))
        landmarks = _find_one(directory, rf"case{case}_(dirlab)?300_{tag}_xyz\.txt", f"case {case} {tag} landmarks")
        points.append(read_dirlab_landmarks(landmarks, 300, shape))
    return LandmarkPair(f"dirlab4dct_case{case}", images[0], images[1], points[0], points[1], spacing)


def load_dirlab_copdgene(root: str | Path, case: int, hu_offset: int | str = "auto",
                         geometry: tuple[Sequence[int], Sequence[float]] | None = None) -> LandmarkPair:
    """DIR-Lab COPDGene case 1-10: inspiration (``iBH``, fixed) and expiration (``eBH``, moving).

    Files anywhere under ``root``: ``copd{N}_iBHCT.img``, ``copd{N}_eBHCT.img``,
    ``copd{N}_300_iBH_xyz_r1.txt``, ``copd{N}_300_eBH_xyz_r1.txt``. ``geometry=(shape, spacing)``
    overrides the published table (for re-sliced copies).
    """
    if case not in DIRLAB_COPDGENE:
        raise ValueError(f"DIR-Lab COPDGene case must be 1-10, got {case}")
    shape, spacing = geometry if geometry is not None else DIRLAB_COPDGENE[case]
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"COPDGene root directory not found: {root}")
    images, points = [], []
    for phase in ("iBH", "eBH"):
        image = _find_one(root, rf"copd{case}_{phase}CT\.img", f"copd{case} {phase}")
        images.append(read_dirlab_image(image, shape, hu_offset))
        landmarks = _find_one(root, rf"copd{case}_300_{phase}_xyz_r1\.txt", f"copd{case} {phase} landmarks")
        points.append(read_dirlab_landmarks(landmarks, 300, shape))
    return LandmarkPair(f"copd{case}", images[0], images[1], points[0], points[1],
                        tuple(float(s) for s in spacing))


# --- Learn2Reg NLST -----------------------------------------------------------------------------

def _read_volume(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """A 3-D image as a ``[z, y, x]`` float32 array and its spacing in array-axis order."""
    import SimpleITK as sitk

    from equireg.data.io import read_image

    image = read_image(path, dimensions=(3,))
    return sitk.GetArrayFromImage(image).astype(np.float32), tuple(float(s) for s in image.GetSpacing()[::-1])


def read_nlst_keypoints(path: str | Path, shape: Sequence[int] | None = None) -> np.ndarray:
    """Read a Learn2Reg keypoint CSV (zero-based voxel ``x, y, z`` per row) as ``(z, y, x)`` rows."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"NLST keypoint file not found: {path}")
    try:
        points = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as error:
        raise ValueError(f"{path}: not a CSV of numbers ({error})") from None
    if points.shape[1] != 3:
        raise ValueError(f"{path}: expected 3 columns (x, y, z), got {points.shape[1]}")
    points = np.ascontiguousarray(points[:, ::-1])
    if shape is not None:
        _check_inside(path, points, shape, "keypoints")
    return points


def nlst_pairs(root: str | Path, split: str = "registration_val") -> list[tuple[str, str]]:
    """(fixed, moving) relative image paths listed in ``root/NLST_dataset.json`` under ``split``
    (``"training_paired_images"`` or ``"registration_val"``)."""
    index = Path(root) / "NLST_dataset.json"
    if not index.is_file():
        raise FileNotFoundError(f"NLST index not found: {index}")
    try:
        listing = json.loads(index.read_text())
        return [(entry["fixed"], entry["moving"]) for entry in listing[split]]
    except json.JSONDecodeError as error:
        raise ValueError(f"{index}: invalid JSON ({error})") from None
    except (KeyError, TypeError):
        raise ValueError(f"{index}: no list of {{fixed, moving}} pairs under {split!r}") from None


def load_nlst(root: str | Path, fixed: str, moving: str) -> LandmarkPair:
    """One NLST pair from ``imagesTr``, with ``masksTr`` masks and ``keypointsTr`` keypoints of the
    same name (``.csv``); ``fixed``/``moving`` are paths relative to ``root`` as in the JSON."""
    root = Path(root)
    images, masks, points, spacings = [], [], [], []
    for relative in (fixed, moving):
        path = (root / relative).resolve()
        image, spacing = _read_volume(path)
        mask, _ = _read_volume(path.parent.parent / "masksTr" / path.name)
        if mask.shape != image.shape:
            raise ValueError(f"{path.parent.parent / 'masksTr' / path.name}: shape {mask.shape} != image {image.shape}")
        stem = path.name[:-len(".nii.gz")] if path.name.endswith(".nii.gz") else path.stem
        points.append(read_nlst_keypoints(path.parent.parent / "keypointsTr" / f"{stem}.csv", image.shape))
        images.append(image)
        masks.append((mask > 0.5).astype(np.float32))
        spacings.append(spacing)
    if len(points[0]) != len(points[1]):
        raise ValueError(f"NLST {fixed} / {moving}: {len(points[0])} vs {len(points[1])} keypoints")
    if images[0].shape != images[1].shape or not np.allclose(spacings[0], spacings[1]):
        raise ValueError(f"NLST {fixed} / {moving}: the two images have different grids")
    name = Path(fixed).name.split(".")[0]
    return LandmarkPair(name, images[0], images[1], points[0], points[1], spacings[0], masks[0], masks[1])


# --- DRIVE --------------------------------------------------------------------------------------

def _read_picture(path: Path) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(f"DRIVE file not found: {path}")
    try:
        with Image.open(path) as picture:
            return np.asarray(picture.convert("RGB") if picture.mode not in ("L", "1", "P") else picture.convert("L"))
    except OSError as error:
        raise ValueError(f"{path}: not a readable image ({error})") from None


def load_drive(root: str | Path, split: str = "training", observer: int = 1) -> list[DriveImage]:
    """DRIVE images of ``split`` ("training": 21-40, "test": 01-20) in numerical order.

    Layout: ``{split}/images/NN_{split}.tif``, ``{split}/mask/NN_{split}_mask.gif``,
    ``{split}/{1st,2nd}_manual/NN_manual{1,2}.gif`` (the second observer exists for test only;
    ``vessels`` is ``None`` where the file is absent for observer 2).
    """
    if split not in ("training", "test"):
        raise ValueError(f"DRIVE split must be 'training' or 'test', got {split!r}")
    if observer not in (1, 2):
        raise ValueError(f"DRIVE observer must be 1 or 2, got {observer}")
    directory = Path(root) / split
    images_dir = directory / "images"
    if not images_dir.is_dir():
        raise FileNotFoundError(f"DRIVE images folder not found: {images_dir}")
    names = sorted(p for p in images_dir.iterdir() if re.fullmatch(rf"\d\d_{split}\.tif", p.name))
    if not names:
        raise FileNotFoundError(f"DRIVE: no NN_{split}.tif files in {images_dir}")
    out = []
    for path in names:
        number = path.name[:2]
        image = _read_picture(path)
        if image.ndim != 3:
            raise ValueError(f"{path}: expected an RGB image, got shape {image.shape}")
        fov = _read_picture(directory / "mask" / f"{number}_{split}_mask.gif") > 127
        manual = directory / ("1st_manual" if observer == 1 else "2nd_manual") / f"{number}_manual{observer}.gif"
        vessels = _read_picture(manual) > 127 if observer == 1 or manual.is_file() else None
        for label, array in (("mask", fov), ("manual", vessels)):
            if array is not None and array.shape != image.shape[:2]:
                raise ValueError(f"DRIVE {number}: {label} shape {array.shape} != image {image.shape[:2]}")
        out.append(DriveImage(f"{number}_{split}", image, fov, vessels))
    return out


def drive_vessel_masks(root: str | Path, split: str = "training") -> list[np.ndarray]:
    """The first observer's vessel masks of a DRIVE split as ``float32`` (vessels = 1), the input
    of :func:`equireg.data.perturb.retina_dataset` (upstream used training images 21-23 for test)."""
    return [item.vessels.astype(np.float32) for item in load_drive(root, split, observer=1)]
