"""Two real chest CTs (pyradiomics' test cases), found, read and resampled for the lung experiment.

Source: the PyPI sdist ``pyradiomics-bhklab==3.1.4`` (BSD-3) holds ``data/lung1_image.nrrd``
(512x512x48 at 0.57x0.57x5 mm) and ``data/lung2_image.nrrd`` (512x512x61 at 0.627x0.627x5 mm),
int16 HU, two patients. Routes, in order: a configured folder holding the two files or the sdist
itself (``datasets: lung_ct:``); else ``pip download`` of the sdist into a folder of the results.
Only the two images are read out of the archive; nothing is extracted to disk.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
import numpy as np
import SimpleITK as sitk

from equireg.data.datasets import load_arrays, save_arrays
from equireg.data.lung_mask import segment_lungs
from equireg.data.physical import cube_around, resample_physical
from equireg.geometry import Geometry, geometry, index_to_physical

SDIST = "pyradiomics-bhklab==3.1.4"
SDIST_FILE = "pyradiomics_bhklab-3.1.4.tar.gz"
PATIENTS = ("lung1", "lung2")
#: room around the lungs' bounding box, so that the motion near the pleura stays inside the grid
MARGIN_MM = 10.0
AIR_FILL_HU = -1024.0


class ChestCTUnavailable(RuntimeError):
    """Neither route to the chest CTs worked; the message says how to take each."""


@dataclass(frozen=True)
class ChestCT:
    """One patient on the lung experiment's grid: HU image, bool lung mask, isotropic spacing (mm)
    and the grid's geometry (ITK order; array axis 0 runs head to feet)."""

    image: np.ndarray
    lung_mask: np.ndarray
    spacing: tuple[float, float, float]
    geometry: Geometry


def _read_nrrd(data: bytes) -> sitk.Image:
    # SimpleITK reads from files only
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "image.nrrd"
        path.write_bytes(data)
        return sitk.ReadImage(str(path))


def read_volumes(source: str | os.PathLike) -> dict[str, sitk.Image]:
    """The two CTs from a folder (``lung1_image.nrrd``, ``lung2_image.nrrd``, or the sdist in it) or
    from the sdist ``.tar.gz`` itself; a missing file raises :class:`FileNotFoundError`."""
    source = Path(source)
    if source.is_dir() and not all((source / f"{p}_image.nrrd").is_file() for p in PATIENTS):
        source = source / SDIST_FILE
    if source.is_dir():
        return {p: sitk.ReadImage(str(source / f"{p}_image.nrrd")) for p in PATIENTS}
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no {' or '.join(f'{p}_image.nrrd' for p in PATIENTS)} and no {SDIST_FILE}")
    with tarfile.open(source) as archive:
        members = {Path(m.name).name: m for m in archive.getmembers() if m.name.endswith("_image.nrrd")}
        missing = [p for p in PATIENTS if f"{p}_image.nrrd" not in members]
        if missing:
            raise FileNotFoundError(f"{source}: holds no {', '.join(f'data/{p}_image.nrrd' for p in missing)}")
        return {p: _read_nrrd(archive.extractfile(members[f"{p}_image.nrrd"]).read()) for p in PATIENTS}


def _pip(*arguments: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([sys.executable, "-m", "pip", *arguments], check=True, capture_output=True, text=True, env=env)


def download_sdist(folder: str | os.PathLike) -> Path:
    """``pip download`` the sdist into ``folder`` (kept for later runs) and return its path.

    Building its metadata needs ``versioneer`` (and ``wheel``) without build isolation; when they
    are missing they go into a private folder on ``PYTHONPATH`` of the pip call, not into the
    environment.
    """
    # absolute: pip builds the metadata in another working directory, where a relative PYTHONPATH breaks
    folder = Path(folder).resolve()
    target = folder / SDIST_FILE
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        env = dict(os.environ)
        try:
            import versioneer  # noqa: F401
        except ImportError:
            tools = Path(scratch) / "tools"
            _pip("install", "--quiet", "--no-deps", "--target", str(tools), "versioneer", "wheel")
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tools), env.get("PYTHONPATH")]))
        _pip("download", "--quiet", "--no-deps", "--no-binary", ":all:", "--no-build-isolation", SDIST,
             "-d", scratch, env=env)
        # renamed only when complete, so a failed download leaves nothing that looks finished
        os.replace(Path(scratch) / SDIST_FILE, target)
    return target


def find_volumes(configured: str | os.PathLike | None, download_folder: str | os.PathLike
                 ) -> dict[str, sitk.Image]:
    """The two CTs from ``configured`` when set, else downloaded into ``download_folder``."""
    if configured:
        try:
            return read_volumes(configured)
        except (OSError, tarfile.TarError) as error:
            reason = f"datasets.lung_ct = {configured}: {error}"
    else:
        try:
            return read_volumes(download_sdist(download_folder))
        except (OSError, tarfile.TarError, subprocess.CalledProcessError) as error:
            # pip's last lines are hints; its error lines say what went wrong
            lines = (getattr(error, "stderr", None) or str(error)).strip().splitlines()
            detail = [line.strip() for line in lines if "error" in line.lower()] or lines[-1:] or [repr(error)]
            reason = f"pip download {SDIST} failed: {' '.join(detail[-3:])}"
    raise ChestCTUnavailable(
        f"The lung experiment's chest CTs are not available ({reason}). Either set `datasets: lung_ct:` "
        f"in config/config.yaml to a folder holding {PATIENTS[0]}_image.nrrd and {PATIENTS[1]}_image.nrrd "
        f"or the sdist {SDIST_FILE} (from a machine online: `pip download --no-deps --no-binary :all: "
        f"--no-build-isolation {SDIST} -d FOLDER` with versioneer installed), or run with network access "
        f"so that the workflow downloads it into {download_folder}; or use the phantom "
        f"(`lung: data: phantom`).")


def prepare(image: sitk.Image, size: int) -> ChestCT:
    """Segment the lungs at full resolution, then resample image and mask in physical space onto an
    isotropic ``size``^3 grid around the lungs' bounding box (plus :data:`MARGIN_MM`)."""
    hu = sitk.GetArrayFromImage(image).astype(np.float32)
    mask = segment_lungs(hu)
    if not mask.any():
        raise ValueError("chest CT: no lung found (no air enclosed by the body below -400 HU)")
    source = geometry(image)
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=np.float64)
    low, high = np.argwhere(mask).min(axis=0), np.argwhere(mask).max(axis=0)
    # the box's eight corners in mm bound the lungs whatever the scan's direction
    points = index_to_physical(low + corners * (high - low), *source)
    target = cube_around(points, size, MARGIN_MM)
    shape = (size,) * 3
    resampled = resample_physical(hu, source, shape, target, fill=AIR_FILL_HU)
    lungs = resample_physical(mask.astype(np.float32), source, shape, target) >= 0.5
    return ChestCT(resampled, lungs, target[1], target)


def save_cache(path: str | os.PathLike, cts: dict[str, ChestCT]) -> None:
    """Write the prepared patients as one ``.npz`` (atomically), so later jobs skip the download
    and the segmentation."""
    arrays = {}
    for name, ct in cts.items():
        origin, spacing, direction = ct.geometry
        arrays.update({f"{name}/image": ct.image.astype(np.float32), f"{name}/lung_mask": ct.lung_mask,
                       f"{name}/origin": np.asarray(origin), f"{name}/spacing": np.asarray(spacing),
                       f"{name}/direction": np.asarray(direction)})
    save_arrays(path, arrays)


def load_cache(path: str | os.PathLike, patient: str) -> ChestCT:
    """One patient from a file written by :func:`save_cache`."""
    arrays = load_arrays(path)
    if f"{patient}/image" not in arrays:
        raise ValueError(f"{path}: holds no chest CT {patient!r}")
    spacing = tuple(float(s) for s in arrays[f"{patient}/spacing"])
    geometry_ = (tuple(arrays[f"{patient}/origin"].tolist()), spacing, tuple(arrays[f"{patient}/direction"].tolist()))
    return ChestCT(arrays[f"{patient}/image"], arrays[f"{patient}/lung_mask"].astype(bool), spacing, geometry_)
