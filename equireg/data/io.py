"""Reading and writing images with SimpleITK, with checks that name the file and the problem."""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import re
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from equireg.files import atomic_path
from equireg.geometry import Geometry, geometry


class ImageError(ValueError):
    """An input image that cannot be used; the message names the file and what is wrong."""


def _itk_reason(error: RuntimeError) -> str:
    """The informative part of a SimpleITK exception: no source paths, object addresses or prefixes."""
    lines = [re.sub(r"^(ITK ERROR: \w+\(0x[0-9a-f]+\): |sitk::ERROR: |\[\w+\] )", "", line.strip())
             for line in str(error).splitlines()
             # the file exists (checked before): ITK's leftover errno text would only mislead
             if not line.startswith(("Exception thrown in SimpleITK", "Reason: No such file"))]
    reason = "; ".join(line for line in lines if line)
    return reason[:300] or "unreadable"


def _expected(dimensions: tuple[int, ...]) -> str:
    return " or ".join(f"{d}-D" for d in dimensions)


def _open(path: Path, dimensions: tuple[int, ...]) -> sitk.ImageFileReader:
    """A reader whose header has been read and checked (file, format, dimension, channels, size)."""
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if not path.is_file():
        raise ImageError(f"{path}: not a file")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        reason = _itk_reason(error)
        unsupported = re.search(r"unsupported image dimension of (\d+)", reason)
        if unsupported:
            raise ImageError(f"{path}: {unsupported.group(1)}-D image; expected {_expected(dimensions)}") from None
        raise ImageError(f"{path}: cannot be read as an image ({reason})") from None
    dimension, components = reader.GetDimension(), reader.GetNumberOfComponents()
    if dimension not in dimensions:
        raise ImageError(f"{path}: {dimension}-D image; expected {_expected(dimensions)}")
    if components > 1 and not (dimension == 2 and components in (2, 3, 4)):
        raise ImageError(f"{path}: {components} components per voxel (a vector image); expected a scalar image "
                         "(or a 2-D colour picture)")
    if min(reader.GetSize()) < 2:
        raise ImageError(f"{path}: degenerate size {reader.GetSize()}")
    return reader


def read_shape(path: str | os.PathLike, dimensions: tuple[int, ...] = (2, 3)) -> tuple[int, ...]:
    """The array-axis shape of an image from its header alone, with the checks of :func:`read_image`
    that need no voxel data."""
    return tuple(_open(Path(path), dimensions).GetSize()[::-1])


def read_header(path: str | os.PathLike, dimensions: tuple[int, ...] = (2, 3)) -> tuple[tuple[int, ...], Geometry]:
    """(array-axis shape, geometry) from the header alone, with the checks of :func:`read_shape`."""
    reader = _open(Path(path), dimensions)
    return tuple(reader.GetSize()[::-1]), geometry(reader)


# --- NIfTI: ITK reads a truncated file, and NaN or infinite voxels, as zeros without a word ---------

_NIFTI_FLOATS = {16: "f4", 64: "f8"}
_CHUNK = 1 << 24  # bytes per read: a multiple of every voxel size


def _nifti_layout(header: bytes) -> tuple[int, int, str | None] | None:
    """(voxel data offset, voxel data bytes, float dtype or None) of a single-file NIfTI-1 header
    (ITK reads no NIfTI-2)."""
    if len(header) < 348 or header[344:348] != b"n+1\0":
        return None
    order = "<" if struct.unpack("<i", header[:4])[0] == 348 else ">"
    dims = struct.unpack(order + "8h", header[40:56])
    datatype, bitpix = struct.unpack(order + "2h", header[70:74])
    offset = max(348, int(struct.unpack(order + "f", header[108:112])[0]))
    count = math.prod(max(1, d) for d in dims[1:1 + min(max(dims[0], 0), 7)])
    return offset, count * bitpix // 8, order + _NIFTI_FLOATS[datatype] if datatype in _NIFTI_FLOATS else None


def _check_nifti(path: Path) -> None:
    """Raise :class:`ImageError` for a truncated NIfTI file or non-finite float voxels in one."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            header = stream.read(348)
            layout = _nifti_layout(header)
            if layout is None:  # a header/image pair or another format: ITK's own checks apply
                return
            offset, expected, dtype = layout
            stream.seek(offset)
            got, bad = 0, 0
            while got < expected:
                block = stream.read(min(_CHUNK, expected - got))
                if not block:
                    break
                if dtype:  # a short last block (truncated file) may end inside a voxel
                    whole = len(block) - len(block) % np.dtype(dtype).itemsize
                    bad += int(np.count_nonzero(~np.isfinite(np.frombuffer(block[:whole], dtype))))
                got += len(block)
            while stream.read(_CHUNK):  # to the end, so gzip verifies its checksum
                pass
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise ImageError(f"{path}: truncated or corrupt compressed data ({error})") from None
    if got < expected:
        raise ImageError(f"{path}: truncated: the header describes {expected} bytes of voxel data, "
                         f"the file holds {got}")
    if bad:
        raise ImageError(f"{path}: {bad} voxels are NaN or infinite")


def read_image(path: str | os.PathLike, dimensions: tuple[int, ...] = (2, 3)) -> sitk.Image:
    """Read a scalar image (.nii.gz, .mha, .nrrd, .png, ...) and check it is usable.

    2-D colour pictures (RGB, RGBA, grey + alpha) become grey: the mean of the colour channels.
    Raises :class:`ImageError` for a missing, unreadable, truncated, wrongly-dimensioned, vector-valued
    or non-finite image.
    """
    path = Path(path)
    reader = _open(path, dimensions)
    if re.search(r"\.nii(\.gz)?$", path.name, re.IGNORECASE):
        _check_nifti(path)
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise ImageError(f"{path}: the header describes a {'x'.join(map(str, reader.GetSize()))} image but its "
                         f"voxel data cannot be read; truncated or corrupt? ({_itk_reason(error)})") from None
    components = image.GetNumberOfComponentsPerPixel()
    if components > 1:
        count = components - 1 if components in (2, 4) else components  # the last of 2 or 4 is alpha
        colours = [sitk.VectorIndexSelectionCast(image, i, sitk.sitkFloat32) for i in range(count)]
        grey = colours[0]
        for colour in colours[1:]:
            grey = grey + colour
        image = grey / float(len(colours))
    array = sitk.GetArrayViewFromImage(image)
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ImageError(f"{path}: {bad} voxels are NaN or infinite")
    return image


def to_tensor(image: sitk.Image, normalize: bool = True) -> torch.Tensor:
    """``[1, 1, *shape]`` float32 tensor in array-axis order; min-max scaled to [0, 1] if asked."""
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    if normalize:
        low, high = float(array.min()), float(array.max())
        array = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return torch.from_numpy(array)[None, None]


# --- registration outputs: the displacement field (NIfTI) and the ITK transform ----------------------

NIFTI_INTENT_DISPVECT = 1006
NIFTI_INTENT_VECTOR = 1007
_INTENT_CODE_OFFSET = 68  # bytes into the NIfTI-1 header (int16)


def _nifti_displacement_bytes(field: sitk.Image, temporary: Path) -> None:
    """Write ``field`` (LPS components, SimpleITK's convention) as a float32 NIfTI displacement field
    that every ITK-based reader (SimpleITK, Slicer, ANTs) reads back exactly.

    3-D: intent 1006 (``NIFTI_INTENT_DISPVECT``) with RAS vectors, as NIfTI prescribes; ITK turns x
    and y back to LPS when it reads that intent. SimpleITK writes vector images with intent 1007 and
    refuses 1006, so x and y are negated here and the intent code is set in the header.
    2-D: ITK's RAS-to-LPS conversion of intent 1006 negates numbers in strides of three, which
    scrambles 2-component vectors, so no 2-D file with that intent reads back right in ITK. A 2-D
    field is written as ITK writes one itself: intent 1007 (a vector) with LPS components.
    """
    dimension = field.GetDimension()
    array = sitk.GetArrayFromImage(field).astype(np.float32)
    if dimension == 3:
        array[..., :2] *= -1
    stored = sitk.GetImageFromArray(array, isVector=True)
    stored.CopyInformation(field)
    plain = temporary.with_name(temporary.name.removesuffix(".gz"))
    try:
        sitk.WriteImage(stored, str(plain), useCompression=False)
        data = bytearray(plain.read_bytes())
    finally:
        plain.unlink(missing_ok=True)
    order = "<" if struct.unpack("<i", data[:4])[0] == 348 else ">"
    intent = NIFTI_INTENT_DISPVECT if dimension == 3 else NIFTI_INTENT_VECTOR
    data[_INTENT_CODE_OFFSET:_INTENT_CODE_OFFSET + 2] = struct.pack(order + "h", intent)
    if temporary.name.endswith(".gz"):
        # mtime 0: the same field gives the same bytes
        temporary.write_bytes(gzip.compress(bytes(data), compresslevel=6, mtime=0))
    else:
        temporary.write_bytes(bytes(data))


def read_displacement(path: str | os.PathLike) -> sitk.Image:
    """Read a displacement field with LPS components, as ``sitk.DisplacementFieldTransform`` takes it.

    Fields written by :func:`write_outputs` are what ``sitk.ReadImage`` reads right on its own. This
    also reads 2-D fields with intent 1006 and RAS vectors (as equireg 0.1.0 wrote them), which ITK
    scrambles (see :func:`_nifti_displacement_bytes`): such a file is read as a plain vector image and
    x and y are negated explicitly.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: {'no such file' if not path.exists() else 'not a file'}")
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            header = stream.read(348)
    except (OSError, EOFError, zlib.error) as error:
        raise ImageError(f"{path}: cannot be read ({error})") from None
    if len(header) < 348 or header[344:348] != b"n+1\0":
        return sitk.ReadImage(str(path))
    order = "<" if struct.unpack("<i", header[:4])[0] == 348 else ">"
    dims = struct.unpack(order + "8h", header[40:56])
    intent = struct.unpack(order + "h", header[_INTENT_CODE_OFFSET:_INTENT_CODE_OFFSET + 2])[0]
    if intent != NIFTI_INTENT_DISPVECT or dims[3] > 1:
        return sitk.ReadImage(str(path))
    with opener(path, "rb") as stream:
        data = bytearray(stream.read())
    data[_INTENT_CODE_OFFSET:_INTENT_CODE_OFFSET + 2] = struct.pack(order + "h", NIFTI_INTENT_VECTOR)
    handle, temporary = tempfile.mkstemp(suffix=".nii")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        image = sitk.ReadImage(temporary)
    finally:
        os.unlink(temporary)
    array = sitk.GetArrayFromImage(image)
    array[..., :2] *= -1  # RAS -> LPS
    field = sitk.GetImageFromArray(array, isVector=True)
    field.CopyInformation(image)
    return field


def write_outputs(images: dict[str | os.PathLike, sitk.Image],
                  displacements: dict[str | os.PathLike, sitk.Image] | None = None,
                  transforms: dict[str | os.PathLike, sitk.Transform] | None = None) -> None:
    """Write images, NIfTI displacement fields and ITK transform files as one: after a failure
    none of them has appeared."""
    with contextlib.ExitStack() as stack:
        for path, image in images.items():
            sitk.WriteImage(image, str(stack.enter_context(atomic_path(path))), useCompression=True)
        for path, field in (displacements or {}).items():
            _nifti_displacement_bytes(field, stack.enter_context(atomic_path(path)))
        for path, transform in (transforms or {}).items():
            sitk.WriteTransform(transform, str(stack.enter_context(atomic_path(path))))
