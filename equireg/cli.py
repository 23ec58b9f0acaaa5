"""Command line: ``equireg register | equivariance | toy`` (also ``python -m equireg``).

Every subcommand prints one JSON object on stdout. Bad input ends with ``error: <file or key>:
<what is wrong>`` on stderr and exit status 2, and leaves no partial output behind.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from equireg import methods


def _checkpoint(value: str) -> Path | None:
    return None if value.lower() == "none" else Path(value)


def _options(pairs: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs; values parsed as JSON where possible (numbers, booleans, lists)."""
    options = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator:
            raise ValueError(f"--option {pair!r}: expected key=value")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _resize(image: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    if tuple(image.shape[2:]) == tuple(shape):
        return image
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(shape)]
    return F.interpolate(image, size=tuple(shape), mode=mode, align_corners=True)


def _size(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


def _run_network(net: torch.nn.Module, method: str, moving: torch.Tensor, fixed: torch.Tensor):
    """``net(moving, fixed)``; a size the architecture cannot take becomes a ValueError."""
    try:
        return net(moving, fixed)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"network size {_size(fixed.shape[2:])}: {method} cannot run at this size "
                         f"({str(error).splitlines()[0]}); pick another --shape") from None


def register(args: argparse.Namespace) -> dict[str, Any]:
    """Register ``--moving`` to ``--fixed``; write the warped image and the ITK displacement field.

    Headers, checkpoint, network size and memory are checked before any voxel is read; both
    outputs appear together or not at all.
    """
    import SimpleITK as sitk

    from equireg import memory, metrics, transforms
    from equireg.data import io
    from equireg.training import load_model

    fixed_shape, moving_shape = io.read_shape(args.fixed), io.read_shape(args.moving)
    dimension = len(fixed_shape)
    if len(moving_shape) != dimension:
        raise ValueError(f"{args.moving}: {len(moving_shape)}-D moving image but {args.fixed} is {dimension}-D")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a directory")
    net, info = load_model(args.checkpoint, args.method, dimension, _options(args.option))
    shape = args.shape or info["input_shape"] or list(fixed_shape)
    if len(shape) != dimension or min(shape) < 2:
        raise ValueError(f"--shape {_size(shape)}: expected {dimension} sizes of at least 2 for {dimension}-D images")
    memory.require(memory.network_bytes(args.method, shape) + memory.pipeline_bytes(fixed_shape)
                   + memory.image_bytes(moving_shape),
                   f"{args.fixed}: registering this {_size(fixed_shape)} image with {args.method} at network "
                   f"size {_size(shape)}", "pass a smaller --shape")
    fixed_image, moving_image = io.read_image(args.fixed), io.read_image(args.moving)
    fixed, moving = io.to_tensor(fixed_image), io.to_tensor(moving_image)
    with torch.no_grad():
        phi = _run_network(net, args.method, _resize(moving, shape), _resize(fixed, shape))
        # phi is defined on [0, 1] coordinates, so it can be sampled at the fixed image's own size.
        coordinate_map = phi.field(fixed.shape[2:])
        warped = transforms.warp(io.to_tensor(moving_image, normalize=False), coordinate_map)
    field = transforms.coordinate_map_to_itk_displacement(coordinate_map, fixed_image, moving_image)
    magnitude = torch.from_numpy(sitk.GetArrayFromImage(field)).norm(dim=-1)

    outputs = {"warped": str(out / "warped.nii.gz"), "displacement": str(out / "displacement.nii.gz")}
    io.write_images({outputs["warped"]: io.from_tensor(warped, fixed_image), outputs["displacement"]: field})
    return {
        "method": args.method,
        "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        "moving": str(args.moving), "fixed": str(args.fixed),
        "network_input_shape": list(shape),
        "folds_percent": metrics.fold_percentage(coordinate_map),
        "displacement_mm": {"mean": float(magnitude.mean()), "max": float(magnitude.max())},
        "outputs": outputs,
    }


def equivariance(args: argparse.Namespace) -> dict[str, Any]:
    """Translation-equivariance error ([U,U] and [W,U]) of a method on one image pair."""
    from equireg import memory
    from equireg.data import io
    from equireg.equivariance import equivariance_report
    from equireg.training import load_model

    if (args.moving is None) != (args.fixed is None):
        raise ValueError("--moving and --fixed go together (or leave both out for a generated vessel pair)")
    if args.moving is None:
        from equireg.data.perturb import make_pair
        from equireg.data.retina import generate_vessel_mask

        pair = make_pair(generate_vessel_mask(0), shifted=False, seed=0, pool=8, with_map=False)
        moving, fixed = (torch.from_numpy(image)[None, None] for image in (pair.moving, pair.fixed))
        source, shape = "the generated vessel pair", tuple(fixed.shape[2:])
    else:
        moving_shape, shape = io.read_shape(args.moving), io.read_shape(args.fixed)
        if len(moving_shape) != len(shape):
            raise ValueError(f"{args.moving}: {len(moving_shape)}-D moving image but {args.fixed} is {len(shape)}-D")
        if moving_shape != shape:
            raise ValueError(f"{args.moving}: size {_size(moving_shape)} differs from {args.fixed} {_size(shape)}; "
                             "resample them to one grid first")
        source = str(args.fixed)
    dimension = len(shape)
    shift_moving = args.shift_moving or [args.shift] + [0] * (dimension - 1)
    shift_fixed = args.shift_fixed or [0] * (dimension - 1) + [args.shift]
    for name, shift in (("--shift-moving", shift_moving), ("--shift-fixed", shift_fixed)):
        if len(shift) != dimension:
            raise ValueError(f"{name} {' '.join(map(str, shift))}: expected {dimension} voxel shifts for "
                             f"{dimension}-D images")
    # both images are zero-padded by the largest shift per axis before they meet the network
    padded = [n + 2 * max(abs(w), abs(u)) for n, w, u in zip(shape, shift_moving, shift_fixed)]
    net, _ = load_model(args.checkpoint, args.method, dimension, _options(args.option))
    # two forward passes, one after the other; the maps compared are like register's pipeline
    memory.require(memory.network_bytes(args.method, padded) + memory.pipeline_bytes(padded),
                   f"{source}: measuring {args.method} on this {_size(shape)} image (padded to {_size(padded)})",
                   "use smaller images or shifts")
    if args.moving is not None:
        moving, fixed = io.to_tensor(io.read_image(args.moving)), io.to_tensor(io.read_image(args.fixed))
    try:
        report = equivariance_report(net, moving, fixed, shift_moving, shift_fixed)
    except RuntimeError as error:
        raise ValueError(f"{args.method} cannot run at the padded size {_size(padded)} "
                         f"({str(error).splitlines()[0]}); try other shifts") from None
    return {"method": args.method, "checkpoint": str(args.checkpoint) if args.checkpoint else None, **report}


def _common_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--method", required=True, choices=methods.names())
    command.add_argument("--checkpoint", required=True, type=_checkpoint,
                         help="model file written by training, or 'none' for a freshly initialised network")
    command.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                         help="builder option for a fresh network (--checkpoint none), e.g. levels=2")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="equireg", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    reg = commands.add_parser("register", help="register a moving image to a fixed image")
    _common_arguments(reg)
    reg.add_argument("--moving", required=True, type=Path, help="any image SimpleITK reads")
    reg.add_argument("--fixed", required=True, type=Path, help="any image SimpleITK reads")
    reg.add_argument("--out", required=True, type=Path, help="output directory")
    reg.add_argument("--shape", type=int, nargs="+",
                     help="network input size (default: the checkpoint's, else the fixed image's)")
    reg.set_defaults(run=register)

    equi = commands.add_parser("equivariance", help="measure [U,U] and [W,U] translation-equivariance error")
    _common_arguments(equi)
    equi.add_argument("--moving", type=Path, help="moving image (default: a generated vessel pair)")
    equi.add_argument("--fixed", type=Path, help="fixed image, same grid as --moving")
    equi.add_argument("--shift", type=int, default=8,
                      help="voxels: W moves the moving image along the first axis, U the fixed one along the last")
    equi.add_argument("--shift-moving", type=int, nargs="+", help="W per array axis (overrides --shift)")
    equi.add_argument("--shift-fixed", type=int, nargs="+", help="U per array axis (overrides --shift)")
    equi.set_defaults(run=equivariance)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = args.run(args)
    except (ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. an unwritable --out
        print(f"error: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0
