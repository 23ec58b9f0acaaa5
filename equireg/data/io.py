"""Reading and writing images with SimpleITK, with checks that name the file and the problem."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from equireg.files import atomic_path


class ImageError(ValueError):
    """An input image that cannot be used; the message names the file and what is wrong."""


def read_image(path: str | os.PathLike, dimensions: tuple[int, ...] = (2, 3)) -> sitk.Image:
    """Read a scalar image (.nii.gz, .mha, .nrrd, .png, ...) and check it is usable.

    Multi-channel 2-D images (RGB PNG) are converted to grey by averaging the channels.
    Raises :class:`ImageError` for a missing, unreadable, wrongly-dimensioned or non-finite image.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
        raise ImageError(f"{path}: cannot be read as an image ({first_line})") from None
    if image.GetNumberOfComponentsPerPixel() > 1:
        channels = [sitk.VectorIndexSelectionCast(image, i, sitk.sitkFloat32)
                    for i in range(image.GetNumberOfComponentsPerPixel())]
        grey = channels[0]
        for channel in channels[1:]:
            grey = grey + channel
        image = grey / float(len(channels))
    if image.GetDimension() not in dimensions:
        raise ImageError(f"{path}: {image.GetDimension()}-D image; expected "
                         f"{' or '.join(f'{d}-D' for d in dimensions)}")
    if min(image.GetSize()) < 2:
        raise ImageError(f"{path}: degenerate size {image.GetSize()}")
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


def from_tensor(tensor: torch.Tensor, reference: sitk.Image) -> sitk.Image:
    """A ``[1, 1, *shape]`` tensor as an image with the geometry of ``reference``."""
    image = sitk.GetImageFromArray(tensor[0, 0].detach().cpu().numpy())
    image.CopyInformation(reference)
    return image


def write_image(image: sitk.Image, path: str | os.PathLike) -> None:
    """Write atomically: readers never see a half-written file."""
    with atomic_path(path) as temporary:
        sitk.WriteImage(image, str(temporary), useCompression=True)
