"""Real brain anatomy for the 3-D shift experiment: Colin27 (T1) with its AAL parcellation.

Source: Debian's ``mricron-data`` (BSD-3 package; Colin27 from the MNI, Holmes et al. 1998; AAL from
Tzourio-Mazoyer et al. 2002): ``ch2.nii.gz`` (the T1), ``ch2bet.nii.gz`` (brain-extracted: its
non-zero voxels give the brain mask), ``aal.nii.gz`` (116 labels) and ``aal.nii.txt`` (their names),
all on one 181x217x181 grid of 1 mm. Routes, in order: a configured folder (``datasets: colin27:``),
an installed package (``/usr/share/mricron/templates``), else ``apt-get download mricron-data`` and
``dpkg -x`` into a folder of the results (kept for later runs). Nothing is committed.

The volumes are resampled in physical space onto the experiment's *canvas*: an isotropic grid of a
chosen spacing centred on Colin27's field of view, extended along the shift axis by the largest
shift, so that a brain moved by any shift of the sweep stays whole (no cropping lowers the ceiling),
and to sizes on which CARL's Ξ is exactly equivariant to whole-cell shifts (:func:`canvas`).
Arrays are ``[z, y, x]`` (SimpleITK's order); the ITK axes x, y, z are Colin27's left-right,
front-back and foot-head.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from equireg.data.datasets import load_arrays, save_arrays
from equireg.data.physical import resample_physical
from equireg.geometry import Geometry, geometry

PACKAGE = "mricron-data"
INSTALLED = Path("/usr/share/mricron/templates")
#: the package's folder of templates, inside an extracted .deb or an installed system
TEMPLATES = Path("usr/share/mricron/templates")
FILES = ("ch2.nii.gz", "ch2bet.nii.gz", "aal.nii.gz", "aal.nii.txt")
#: ITK axis name -> array axis (arrays are [z, y, x])
AXES = {"x": 2, "y": 1, "z": 0}
#: intensities are divided by this percentile of the brain (the brightest white matter), then clipped
NORMALISING_PERCENTILE = 99.5


class BrainDataUnavailable(RuntimeError):
    """No route to Colin27 + AAL worked; the message says how to take each."""


@dataclass(frozen=True)
class Colin27:
    """Colin27 on a canvas: T1 in [0, 1] (zero outside the brain), bool brain mask, AAL labels
    (int16, 0 = background), the label names (index k-1 names label k), isotropic spacing (mm) and
    the canvas geometry (ITK order)."""

    image: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...]
    spacing: float
    geometry: Geometry


# --- finding the files ----------------------------------------------------------------------------

def template_folder(folder: str | os.PathLike) -> Path | None:
    """``folder`` itself or its ``usr/share/mricron/templates`` (an extracted package), whichever holds
    all of :data:`FILES`; ``None`` if neither does."""
    for candidate in (Path(folder), Path(folder) / TEMPLATES):
        if all((candidate / name).is_file() for name in FILES):
            return candidate
    return None


def _run(*command: str, cwd: str | os.PathLike) -> None:
    subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True)


def download_package(folder: str | os.PathLike) -> Path:
    """``apt-get download`` the package into ``folder`` and extract it there with ``dpkg -x``; returns
    its templates folder. Kept for later runs; a failure leaves nothing that looks finished (the
    extraction is renamed into place only when complete). When the download fails for want of
    package lists and we are root, ``apt-get update`` runs once and the download is retried."""
    folder = Path(folder).resolve()
    target = folder / PACKAGE
    found = template_folder(target)
    if found:
        return found
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        try:
            _run("apt-get", "download", PACKAGE, cwd=scratch)
        except subprocess.CalledProcessError:
            if os.geteuid() != 0:
                raise
            _run("apt-get", "update", cwd=scratch)
            _run("apt-get", "download", PACKAGE, cwd=scratch)
        package = next(Path(scratch).glob(f"{PACKAGE}_*.deb"))
        extracted = Path(scratch) / "extracted"
        _run("dpkg", "-x", str(package), str(extracted), cwd=scratch)
        if template_folder(extracted) is None:
            raise FileNotFoundError(f"{package.name} holds none of {', '.join(FILES)} under {TEMPLATES}")
        if target.exists():  # an earlier, incomplete extraction
            shutil.rmtree(target)
        os.replace(extracted, target)
    return template_folder(target)


def _failure(error: BaseException) -> str:
    lines = (getattr(error, "stderr", None) or str(error) or repr(error)).strip().splitlines()
    return lines[-1] if lines else repr(error)


def find_templates(configured: str | os.PathLike | None, download_folder: str | os.PathLike,
                   installed: str | os.PathLike = INSTALLED) -> Path:
    """The folder holding :data:`FILES`: ``configured`` when set (and only it), else ``installed``,
    else the package downloaded into ``download_folder``."""
    if configured:
        found = template_folder(configured)
        if found:
            return found
        reason = f"datasets.colin27 = {configured} holds none of {', '.join(FILES)} (nor {TEMPLATES}/ with them)"
    else:
        found = template_folder(installed)
        if found:
            return found
        try:
            return download_package(download_folder)
        except (OSError, subprocess.CalledProcessError, StopIteration) as error:
            reason = (f"{installed} is not there, and `apt-get download {PACKAGE}` + `dpkg -x` into "
                      f"{download_folder} failed: {_failure(error)}")
    raise BrainDataUnavailable(
        f"The brain experiment's Colin27 + AAL are not available ({reason}). Take one route: "
        f"(1) set `datasets: colin27:` in config/config.yaml to a folder holding {', '.join(FILES)} "
        f"(e.g. the extracted package: `apt-get download {PACKAGE} && dpkg -x {PACKAGE}_*.deb FOLDER` on any "
        f"Debian or Ubuntu machine); (2) install the package (`apt-get install {PACKAGE}`, which puts them in "
        f"{installed}); (3) run where `apt-get download {PACKAGE}` works (Debian/Ubuntu with package lists: "
        f"`apt-get update` as root once), so that the workflow fetches it into {download_folder}.")


def label_names(path: str | os.PathLike) -> tuple[str, ...]:
    """AAL's names from ``aal.nii.txt`` (lines ``index name code``), in index order from 1."""
    rows = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    names = {int(row[0]): row[1] for row in rows}
    if sorted(names) != list(range(1, len(names) + 1)):
        raise ValueError(f"{path}: label indices are not 1..{len(names)}")
    return tuple(names[k] for k in range(1, len(names) + 1))


# --- preparing ------------------------------------------------------------------------------------

def brain_mask(extracted: np.ndarray) -> np.ndarray:
    """The brain mask from a brain-extracted T1 (``ch2bet``): its non-zero voxels, whose crude
    edge has stripes of missing voxels, closed, filled and reduced to the largest part."""
    mask = ndimage.binary_closing(np.asarray(extracted) > 0, ndimage.generate_binary_structure(3, 1),
                                  iterations=3, border_value=0)
    mask = ndimage.binary_fill_holes(mask)
    labels, count = ndimage.label(mask)
    if not count:
        raise ValueError("brain mask: the brain-extracted image is empty")
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


def canvas(source: Geometry, source_size: Sequence[int], spacing: float, axis: str = "x",
           padding: int = 0, pooling: int = 1) -> tuple[Geometry, tuple[int, ...]]:
    """Geometry and array shape of the canvas: the smallest isotropic grid of ``spacing`` (same
    direction) that holds the source's field of view, centred on it, then ``padding`` voxels more at
    the high-index end of ``axis`` (ITK name), where shifted brains go, and up to ``N - 1`` divisible
    by ``pooling`` on every axis (more voxels at the high end): on such sizes a network that pools by
    ``pooling`` (CARL's Ξ: :data:`equireg.carl.XI_POOLING`) is exactly equivariant to shifts of whole
    coarse cells (:mod:`equireg.equivariance`); on others its maps are off by a fraction of the shift."""
    origin, source_spacing, direction = source
    extent = np.asarray([(n - 1) * s for n, s in zip(source_size, source_spacing)])
    size = np.ceil(extent / spacing - 1e-9).astype(int) + 1
    axes = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    centre = np.asarray(origin) + axes @ (extent / 2)
    start = centre - axes @ (spacing * (size - 1) / 2)
    size[2 - AXES[axis]] += padding
    size += (-(size - 1)) % pooling
    return ((tuple(float(v) for v in start), (float(spacing),) * 3, tuple(float(v) for v in direction)),
            tuple(int(n) for n in size[::-1]))


def normalise(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` in [0, 1] inside ``mask``, zero outside: divided by :data:`NORMALISING_PERCENTILE`
    of the brain's intensities (a few bright voxels must not darken the rest), clipped."""
    scale = float(np.percentile(image[mask], NORMALISING_PERCENTILE))
    return (np.clip(image / scale, 0.0, 1.0) * mask).astype(np.float32)


def prepare(folder: str | os.PathLike, spacing: float, axis: str = "x", padding: int = 0, pooling: int = 1) -> Colin27:
    """Colin27, its brain mask and AAL from a templates folder (or an extracted package), on the canvas of :func:`canvas`:
    the T1 (times the mask, so the skull does not move with the brain) linearly with anti-aliasing,
    the mask linearly then thresholded at 0.5, the labels by nearest neighbour."""
    folder = template_folder(folder) or Path(folder)
    t1, extracted, atlas = (sitk.ReadImage(str(folder / name)) for name in FILES[:3])
    source = geometry(t1)
    for name, image in (("ch2bet", extracted), ("aal", atlas)):
        if image.GetSize() != t1.GetSize() or not np.allclose(geometry(image)[0], source[0]):
            raise ValueError(f"{folder}: {name} is not on Colin27's grid")
    mask = brain_mask(sitk.GetArrayFromImage(extracted))
    target, shape = canvas(source, t1.GetSize(), spacing, axis, padding, pooling)
    brain = sitk.GetArrayFromImage(t1).astype(np.float32) * mask
    resampled_mask = resample_physical(mask.astype(np.float32), source, shape, target) >= 0.5
    image = normalise(resample_physical(brain, source, shape, target), resampled_mask)
    labels = np.rint(resample_physical(sitk.GetArrayFromImage(atlas), source, shape, target, order=0))
    return Colin27(image, resampled_mask, labels.astype(np.int16), label_names(folder / FILES[3]), float(spacing),
                   target)


# --- cache ----------------------------------------------------------------------------------------

def save_cache(path: str | os.PathLike, volume: Colin27) -> None:
    """Write the prepared volume as one ``.npz`` (atomically, byte-reproducibly)."""
    origin, spacing, direction = volume.geometry
    save_arrays(path, {"image": volume.image, "mask": volume.mask, "labels": volume.labels,
                       "names": np.asarray(volume.names), "origin": np.asarray(origin),
                       "spacing": np.asarray(spacing), "direction": np.asarray(direction)})


def load_cache(path: str | os.PathLike) -> Colin27:
    """The volume written by :func:`save_cache`."""
    arrays = load_arrays(path)
    missing = {"image", "mask", "labels", "names", "spacing"} - set(arrays)
    if missing:
        raise ValueError(f"{path}: not a Colin27 cache (lacks {sorted(missing)}); rebuild it (rule brain_data)")
    geometry_ = (tuple(arrays["origin"].tolist()), tuple(arrays["spacing"].tolist()),
                 tuple(arrays["direction"].tolist()))
    return Colin27(arrays["image"], arrays["mask"].astype(bool), arrays["labels"],
                   tuple(str(n) for n in arrays["names"]), float(arrays["spacing"][0]), geometry_)
