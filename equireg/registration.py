"""Registering one pair of image files in physical space: the pipeline behind ``equireg register``
and ``equireg evaluate``, callable from Python with a network built or loaded there.

Errors and warnings name the inputs as the command line does (``--moving``, ``--fixed``, ``--shape``).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from equireg import devices
from equireg.instance_optimization import InstanceOptimization


def size_text(shape: Sequence[int]) -> str:
    """``AxB``: a shape as messages write it."""
    return "x".join(map(str, shape))


def _grid_text(image: Any) -> str:
    """``AxB (spacing sxs mm, origin (x, y))``, array-axis order except the ITK origin."""
    origin = ", ".join(f"{v:.4g}" for v in image.GetOrigin())
    spacing = "x".join(f"{v:.4g}" for v in image.GetSpacing()[::-1])
    return f"{size_text(image.GetSize()[::-1])} (spacing {spacing} mm, origin ({origin}))"


def pair_headers(moving: str | os.PathLike, fixed: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], Any]]:
    """``{"moving": (shape, geometry), "fixed": (shape, geometry)}`` from the headers alone; an error
    unless both images are readable and of one dimension."""
    from equireg.data import io

    headers = {"moving": io.read_header(moving), "fixed": io.read_header(fixed)}
    moving_dimension, fixed_dimension = (len(headers[side][0]) for side in ("moving", "fixed"))
    if moving_dimension != fixed_dimension:
        raise ValueError(f"{moving}: {moving_dimension}-D moving image but {fixed} is {fixed_dimension}-D")
    return headers


def _run_network(net: torch.nn.Module, method: str, moving: torch.Tensor, fixed: torch.Tensor,
                 optimization: InstanceOptimization | None = None):
    """``net(moving, fixed)``, after instance optimisation if asked; a size the architecture cannot
    take becomes a ValueError."""
    device = devices.of(net)
    try:
        if optimization is not None:
            return optimization.register(net, moving.to(device), fixed.to(device))
        with torch.no_grad():
            return net(moving.to(device), fixed.to(device))
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"network size {size_text(fixed.shape[2:])}: {method} cannot run at this size "
                         f"({str(error).splitlines()[0]}); pick another --shape") from None


@dataclass
class Registration:
    """What registering a moving image to a fixed image produced, on the fixed image's grid."""

    fixed: Any              # SimpleITK images
    moving: Any
    field: Any              # vector image, ITK displacement in physical units (float64)
    transform: Any          # sitk.DisplacementFieldTransform of ``field``
    warped: Any             # the moving image resampled with ``transform`` (float32, 0 outside)
    moving_map: torch.Tensor  # phi on the fixed grid in the moving image's [0, 1] coordinates
    summary: dict[str, Any]

    def write(self, directory: str | os.PathLike) -> dict[str, str]:
        """Write the warped image, the NIfTI displacement field (float32, read back exactly by ITK)
        and the ITK transform to ``directory``, all or none; returns their paths by name."""
        from equireg.data import io

        out = Path(directory)
        outputs = {"warped": str(out / "warped.nii.gz"), "displacement": str(out / "displacement.nii.gz"),
                   "transform": str(out / "transform.h5")}
        io.write_outputs({outputs["warped"]: self.warped}, displacements={outputs["displacement"]: self.field},
                         transforms={outputs["transform"]: self.transform})
        return outputs


def register_pair(net: torch.nn.Module, method: str, moving: str | os.PathLike, fixed: str | os.PathLike,
                  shape: Sequence[int] | None = None, warn: Callable[[str], None] | None = None,
                  optimization: InstanceOptimization | None = None) -> Registration:
    """Register the image file ``moving`` to ``fixed`` in physical space with ``net``, a network of
    the registry's ``method`` (built by :func:`equireg.methods.build` or loaded by
    :func:`equireg.training.load_model`).

    Both images are resampled (SimpleITK, linear) onto one network grid of ``shape`` (default: the
    fixed image's) built from the fixed image (:func:`equireg.geometry.network_grid`: the aspect
    ratio kept, padded), the network runs there, and its transform is evaluated at every voxel of
    the fixed image. Headers, network size and memory are checked before any voxel is read.
    ``warn`` receives each resampling notice (default: :func:`warnings.warn`). With
    ``optimization``, the network is fine-tuned on the pair first (its weights are restored after).
    """
    import SimpleITK as sitk

    from equireg import geometry, memory, metrics
    from equireg.data import io
    from equireg.transforms import identity_map

    warn = warn or warnings.warn
    headers = pair_headers(moving, fixed)
    (moving_shape, _), (fixed_shape, _) = headers["moving"], headers["fixed"]
    dimension = len(fixed_shape)
    shape = list(shape or fixed_shape)
    if len(shape) != dimension or min(shape) < 2:
        raise ValueError(f"--shape {size_text(shape)}: expected {dimension} sizes of at least 2 for "
                         f"{dimension}-D images")
    memory.require(memory.network_bytes(method, shape) + memory.pipeline_bytes(fixed_shape)
                   + memory.image_bytes(moving_shape),
                   f"{fixed}: registering this {size_text(fixed_shape)} image with {method} at network "
                   f"size {size_text(shape)}", "pass a smaller --shape")
    fixed_image, moving_image = io.read_image(fixed), io.read_image(moving)
    grid = geometry.network_grid(fixed_image, shape)
    # the part of the network grid the fixed image fills; the rest is padding
    filled = [round((n - 1) * s / g) + 1 for n, s, g in
              zip(fixed_shape, fixed_image.GetSpacing()[::-1], grid.GetSpacing()[::-1])]
    padding = f"; the fixed image fills {size_text(filled)} of it, padded to keep its aspect ratio" \
        if list(filled) != list(shape) else ""
    inputs = []
    for name, path, image in (("--moving", moving, moving_image), ("--fixed", fixed, fixed_image)):
        if not geometry.same_grid(image, grid):
            warn(f"{name} {path}: resampled from {_grid_text(image)} to the network grid {_grid_text(grid)}{padding}")
        inputs.append(io.to_tensor(geometry.resample_to(image, grid)))
    phi = _run_network(net, method, *inputs, optimization)
    with torch.no_grad():
        points = geometry.voxel_points(fixed_shape, geometry.geometry(fixed_image))
        if geometry.same_grid(fixed_image, grid):  # exact grid coordinates: identity stays identity
            query = identity_map(fixed_shape)
        else:
            query = geometry.physical_to_coordinates(points, geometry.geometry(grid), shape)
        mapped = phi(query.to(devices.of(net))).cpu()  # where each fixed voxel lands, in network-grid coordinates
        del query
    folds = metrics.fold_percentage(mapped)  # the grid is the fixed grid scaled: same Jacobian signs
    mapped_points = geometry.coordinates_to_physical(mapped, geometry.geometry(grid), shape)
    del mapped
    field = sitk.GetImageFromArray(mapped_points - points, isVector=True)
    field.CopyInformation(fixed_image)
    del points
    moving_map = geometry.physical_to_coordinates(mapped_points, geometry.geometry(moving_image), moving_shape)
    del mapped_points
    transform = sitk.DisplacementFieldTransform(sitk.Image(field))  # the constructor empties its argument
    warped = sitk.Resample(sitk.Cast(moving_image, sitk.sitkFloat32), fixed_image, transform, sitk.sitkLinear,
                           0.0, sitk.sitkFloat32)
    magnitude = np.linalg.norm(sitk.GetArrayViewFromImage(field), axis=-1)
    summary = {
        "method": method,
        "moving": str(moving), "fixed": str(fixed),
        "network_input_shape": list(shape),
        "network_spacing_mm": [float(s) for s in grid.GetSpacing()[::-1]],
        "resampled": not (geometry.same_grid(fixed_image, grid) and geometry.same_grid(moving_image, grid)),
        "folds_percent": folds,
        "displacement_mm": {"mean": float(magnitude.mean()), "max": float(magnitude.max())},
    }
    if optimization is not None:
        summary["instance_optimization"] = {"steps": optimization.steps, "lr": optimization.lr}
    if getattr(net, "chosen_metrics", None):
        summary["metric"] = net.chosen_metrics[0]
    return Registration(fixed_image, moving_image, field, transform, warped, moving_map, summary)
