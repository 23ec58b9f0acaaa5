"""Command line: ``equireg register | evaluate | equivariance`` (also ``python -m equireg``).

Every subcommand prints one JSON object on stdout. Bad input ends with ``error: <file or key>:
<what is wrong>`` on stderr and exit status 2, and leaves no partial output behind. Warnings
(an image resampled to the network grid) and progress bars go to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from equireg import devices, methods
from equireg.instance_optimization import PAPER_LR, InstanceOptimization
from equireg.registration import Registration, pair_headers, register_pair, size_text

#: the subcommands, in the order ``--help`` lists them
SUBCOMMANDS = ("register", "evaluate", "equivariance")


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


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _configure(args: argparse.Namespace) -> None:
    """``--threads``: torch's intra-op threads and SimpleITK's global default."""
    if args.threads is None:
        return
    if args.threads < 1:
        raise ValueError(f"--threads {args.threads}: expected at least 1")
    import SimpleITK as sitk

    torch.set_num_threads(args.threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)


def _load(args: argparse.Namespace, dimension: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The network of ``--method``/``--checkpoint``, with ``--threads`` and the progress setting."""
    from equireg.training import load_model

    if args.checkpoint is not None and args.option:
        raise ValueError(f"--option {' '.join(args.option)}: builder options apply to a fresh network "
                         f"(--checkpoint none); {args.checkpoint} brings its own")
    device = devices.resolve_device(args.device)
    net, info = load_model(args.checkpoint, args.method, dimension, _options(args.option), device,
                           devices.resolve_precision(args.precision, device))
    # networks that run their own thread pool and iterations (the classical method) expose these
    if args.threads is not None and hasattr(net, "threads"):
        net.threads = args.threads
    if hasattr(net, "progress"):
        net.progress = sys.stderr.isatty() if args.progress is None else args.progress
    return net, info


def _network_summary(args: argparse.Namespace) -> dict[str, Any]:
    """The first keys of every subcommand's JSON: which network ran."""
    return {"method": args.method, "checkpoint": str(args.checkpoint) if args.checkpoint else None}


def _check_out(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a directory")


def _register_pair(args: argparse.Namespace) -> tuple[Registration, dict[str, Any]]:
    """``--moving`` registered to ``--fixed`` by the network of ``--method``/``--checkpoint``
    (:func:`equireg.registration.register_pair`), and its summary."""
    dimension = len(pair_headers(args.moving, args.fixed)["fixed"][0])
    _check_instance_optimization(args)
    net, info = _load(args, dimension)
    registration = register_pair(net, args.method, args.moving, args.fixed, args.shape or info["input_shape"],
                                 warn=_warn, optimization=_instance_optimization(args, net, info))
    return registration, {**_network_summary(args), **registration.summary}


def _check_instance_optimization(args: argparse.Namespace) -> None:
    """``--io-steps``/``--io-lr`` before anything is loaded."""
    if args.io_steps < 0:
        raise ValueError(f"--io-steps {args.io_steps}: expected 0 or more")
    if not args.io_lr > 0:
        raise ValueError(f"--io-lr {args.io_lr}: expected a positive learning rate")
    if args.io_steps and not methods.registry()[args.method].trains:
        raise ValueError(f"--io-steps: {args.method} has no weights to fine-tune")
    if args.io_steps and args.checkpoint is None:
        raise ValueError("--io-steps: instance optimisation fine-tunes a trained network with its training loss; "
                         "give its --checkpoint")


def _instance_optimization(args: argparse.Namespace, net: torch.nn.Module,
                           info: dict[str, Any]) -> InstanceOptimization | None:
    """``--io-steps`` Adam steps at ``--io-lr`` with the loss of the checkpoint's last training stage."""
    if not args.io_steps:
        return None
    if info["final_stage"] is None:
        raise ValueError(f"--io-steps: {args.checkpoint} does not record the loss it was trained with "
                         "(model files written before equireg recorded it); retrain to fine-tune it")
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    return InstanceOptimization.of(net, info["final_stage"], args.io_steps, args.io_lr, progress)


def register(args: argparse.Namespace) -> dict[str, Any]:
    """Register ``--moving`` to ``--fixed``; write the warped image, the displacement field (NIfTI,
    float32, read back exactly by ITK) and the ITK transform (``transform.h5``) to ``--out``."""
    _check_out(args)
    registration, summary = _register_pair(args)
    return {**summary, "outputs": registration.write(args.out)}


# --- evaluate: the suite's metrics on the user's own pair --------------------------------------------

def _read_landmarks(path: Path, dimension: int) -> np.ndarray:
    """``[K, D]`` physical points (x, y, z in mm, the images' frame) from a text or CSV file.

    One landmark per line, numbers separated by commas, semicolons or white space; ``#`` starts a
    comment; a first line that is not numeric is a header.
    """
    if not path.is_file():
        raise ValueError(f"{path}: {'no such file' if not path.exists() else 'not a file'}")
    rows = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        fields = [f for f in re.split(r"[\s,;]+", line.split("#")[0].strip()) if f]
        if not fields:
            continue
        try:
            values = [float(f) for f in fields]
        except ValueError:
            if not rows and number == 1:
                continue  # a header line
            raise ValueError(f"{path}: line {number}: not a number in {line.strip()!r}") from None
        if len(values) != dimension:
            raise ValueError(f"{path}: line {number}: {len(values)} coordinates; expected {dimension} "
                             f"(physical x{' y z' if dimension == 3 else ' y'} in mm) for {dimension}-D images")
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"{path}: line {number}: non-finite coordinate")
        rows.append(values)
    if not rows:
        raise ValueError(f"{path}: no landmarks")
    return np.asarray(rows, dtype=np.float64)


def _check_landmarks(path: Path, points: np.ndarray, image: Path, shape, geometry) -> np.ndarray:
    """Continuous array-axis indices of ``points`` in ``image``; an error if any lies outside."""
    from equireg.geometry import physical_to_index
    from equireg.transforms import inside

    index = physical_to_index(points, *geometry)
    outside = ~inside(index, shape, tolerance=1e-6)
    if outside.any():
        rows = ", ".join(str(i + 1) for i in np.flatnonzero(outside)[:5])
        raise ValueError(f"{path}: {int(outside.sum())} of {len(points)} landmarks (rows {rows}"
                         f"{', ...' if outside.sum() > 5 else ''}) lie outside {image}; landmarks are "
                         f"physical points ({' '.join('xyz'[:points.shape[1]])} in mm) in the images' frame")
    return index


def _check_labels(labels: Path, image: Path, shape, geometry) -> None:
    from equireg.data import io
    from equireg.geometry import same_geometry

    label_shape, label_geometry = io.read_header(labels)
    if len(label_shape) != len(shape):
        raise ValueError(f"{labels}: {len(label_shape)}-D label map but {image} is {len(shape)}-D")
    if label_shape != shape:
        raise ValueError(f"{labels}: label map of size {size_text(label_shape)} but {image} is {size_text(shape)}")
    if not same_geometry(label_geometry, geometry):
        raise ValueError(f"{labels}: label map geometry (origin, spacing, direction) differs from {image}")


def _label_tensor(path: Path) -> torch.Tensor:
    from equireg.data import io

    array = io.to_tensor(io.read_image(path), normalize=False)
    if (array < 0).any() or (array != array.round()).any():
        raise ValueError(f"{path}: not a label map (values must be non-negative integers)")
    return array.long()


def _pair_given(args: argparse.Namespace, kind: str) -> bool:
    moving, fixed = getattr(args, f"moving_{kind}"), getattr(args, f"fixed_{kind}")
    if (moving is None) != (fixed is None):
        raise ValueError(f"--moving-{kind} and --fixed-{kind} go together")
    return moving is not None


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Register ``--moving`` to ``--fixed`` and measure Dice per label, TRE (mm) and % folds.

    Every input (images, label maps, landmark files) is checked before the registration runs;
    outputs, with ``--out``, are written only after every measurement succeeded.
    """
    from equireg import metrics
    from equireg.geometry import physical_to_coordinates, voxel_points
    from equireg.transforms import DisplacementTransform, identity_map, warp_labels

    labels, landmarks = _pair_given(args, "labels"), _pair_given(args, "landmarks")
    if not (labels or landmarks):
        raise ValueError("evaluate needs --moving-labels/--fixed-labels or --moving-landmarks/--fixed-landmarks")
    if args.out is not None:
        _check_out(args)
    headers = pair_headers(args.moving, args.fixed)
    dimension = len(headers["fixed"][0])
    if labels:
        for side in ("moving", "fixed"):
            _check_labels(getattr(args, f"{side}_labels"), getattr(args, side), *headers[side])
    if landmarks:
        points = {side: _read_landmarks(getattr(args, f"{side}_landmarks"), dimension) for side in ("moving", "fixed")}
        if len(points["moving"]) != len(points["fixed"]):
            raise ValueError(f"{args.moving_landmarks}: {len(points['moving'])} landmarks but "
                             f"{args.fixed_landmarks} has {len(points['fixed'])}; they pair up row by row")
        indices = {side: _check_landmarks(getattr(args, f"{side}_landmarks"), points[side], getattr(args, side),
                                          *headers[side]) for side in ("moving", "fixed")}
    if labels:  # read (and checked for integer values) before the registration runs
        label_maps = {side: _label_tensor(getattr(args, f"{side}_labels")) for side in ("moving", "fixed")}
        present = torch.unique(torch.cat([label_maps["moving"].flatten(), label_maps["fixed"].flatten()]))
        label_values = [int(v) for v in present if v != 0]
        if not label_values:
            raise ValueError(f"{args.fixed_labels}, {args.moving_labels}: no foreground label (all 0)")

    registration, result = _register_pair(args)
    fixed_shape, moving_shape = headers["fixed"][0], headers["moving"][0]
    if labels:
        # the suite's label warping (nearest neighbour, 0 outside) on phi's moving coordinates
        warped = warp_labels(label_maps["moving"], registration.moving_map)
        # before registration: the moving labels where the headers put them (identity in physical space)
        unmoved = warp_labels(label_maps["moving"], physical_to_coordinates(
            voxel_points(fixed_shape, headers["fixed"][1]), headers["moving"][1], moving_shape))
        after = metrics.dice_per_label(warped[0, 0], label_maps["fixed"][0, 0], label_values)
        before = metrics.dice_per_label(unmoved[0, 0], label_maps["fixed"][0, 0], label_values)
        result["dice"] = {"per_label": {str(k): v for k, v in after.items()}, "mean": float(np.mean(list(after.values()))),
                          "unregistered_per_label": {str(k): v for k, v in before.items()},
                          "unregistered_mean": float(np.mean(list(before.values())))}
    if landmarks:
        displacement = registration.moving_map - identity_map(fixed_shape)
        errors = metrics.landmark_errors_mm(DisplacementTransform(displacement), indices["fixed"],
                                            indices["moving"], fixed_shape, moving_shape,
                                            headers["moving"][1][1][::-1])
        unregistered = np.linalg.norm(points["fixed"] - points["moving"], axis=1)
        result["tre_mm"] = {"mean": float(errors.mean()), "median": float(np.median(errors)),
                            "max": float(errors.max()), "per_landmark": [float(e) for e in errors],
                            "unregistered_mean": float(unregistered.mean())}
    if args.out is not None:
        result["outputs"] = registration.write(args.out)
    return result


def equivariance(args: argparse.Namespace) -> dict[str, Any]:
    """Translation-equivariance error ([U,U] and [W,U]) of a method on one image pair."""
    from equireg import memory
    from equireg.data import io
    from equireg.equivariance import equivariance_report

    if (args.moving is None) != (args.fixed is None):
        raise ValueError("--moving and --fixed go together (or leave both out for a generated vessel pair)")
    if args.moving is None:
        from equireg.data.perturb import make_pair
        from equireg.data.retina import generate_vessel_mask

        pair = make_pair(generate_vessel_mask(0), shifted=False, seed=0, pool=8, with_map=False)
        moving, fixed = (torch.from_numpy(image)[None, None] for image in (pair.moving, pair.fixed))
        source, shape = "the generated vessel pair", tuple(fixed.shape[2:])
    else:
        headers = pair_headers(args.moving, args.fixed)
        (moving_shape, _), (shape, _) = headers["moving"], headers["fixed"]
        if moving_shape != shape:
            raise ValueError(f"{args.moving}: size {size_text(moving_shape)} differs from {args.fixed} "
                             f"{size_text(shape)}; resample them to one grid first")
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
    net, _ = _load(args, dimension)
    # two forward passes, one after the other; the maps compared are like register's pipeline
    memory.require(memory.network_bytes(args.method, padded) + memory.pipeline_bytes(padded),
                   f"{source}: measuring {args.method} on this {size_text(shape)} image "
                   f"(padded to {size_text(padded)})",
                   "use smaller images or shifts")
    if args.moving is not None:
        moving, fixed = io.to_tensor(io.read_image(args.moving)), io.to_tensor(io.read_image(args.fixed))
    try:
        report = equivariance_report(net, moving.to(devices.of(net)), fixed.to(devices.of(net)), shift_moving,
                                     shift_fixed)
    except RuntimeError as error:
        raise ValueError(f"{args.method} cannot run at the padded size {size_text(padded)} "
                         f"({str(error).splitlines()[0]}); try other shifts") from None
    return {**_network_summary(args), **report}


def _common_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--method", required=True, choices=methods.names())
    command.add_argument("--checkpoint", required=True, type=_checkpoint,
                         help="model file written by training, or 'none' for a freshly initialised network")
    command.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                         help="builder option for a fresh network (--checkpoint none only), e.g. levels=2")
    command.add_argument("--threads", type=int, metavar="N",
                         help="torch threads and SimpleITK's default thread count (the classical method "
                              "runs single-threaded otherwise)")
    command.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    command.add_argument("--precision", default="fp32", choices=devices.PRECISIONS,
                         help="of the network's convolutions (auto: bf16 where the hardware has it natively)")
    command.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                         help="progress bar of iterative registration on stderr (default: when stderr is a terminal)")


def _pair_arguments(command: argparse.ArgumentParser, out_required: bool) -> None:
    command.add_argument("--moving", required=True, type=Path, help="any image SimpleITK reads")
    command.add_argument("--fixed", required=True, type=Path, help="any image SimpleITK reads")
    command.add_argument("--out", required=out_required, type=Path,
                         help="output directory: warped.nii.gz, displacement.nii.gz, transform.h5"
                              + ("" if out_required else " (optional)"))
    command.add_argument("--shape", type=int, nargs="+",
                         help="network input size (default: the checkpoint's, else the fixed image's); the images "
                              "are resampled to it in physical space, keeping their aspect ratio")
    command.add_argument("--io-steps", type=int, default=0, metavar="N",
                         help="instance optimisation: fine-tune the network on this pair for N Adam steps with its "
                              "training loss before registering it (the paper: 50); the checkpoint file is not changed")
    command.add_argument("--io-lr", type=float, default=PAPER_LR, metavar="LR",
                         help=f"learning rate of instance optimisation (default {PAPER_LR:g}, the paper's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="equireg")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")

    reg = commands.add_parser("register", help="register a moving image to a fixed image")
    _common_arguments(reg)
    _pair_arguments(reg, out_required=True)
    reg.set_defaults(run=register)

    ev = commands.add_parser("evaluate", help="register a pair and print Dice per label, TRE (mm) and %% folds")
    _common_arguments(ev)
    _pair_arguments(ev, out_required=False)
    ev.add_argument("--moving-labels", type=Path, help="label map on the moving image's grid")
    ev.add_argument("--fixed-labels", type=Path, help="label map on the fixed image's grid")
    ev.add_argument("--moving-landmarks", type=Path,
                    help="text/CSV, one landmark per line: physical x y (z) in mm")
    ev.add_argument("--fixed-landmarks", type=Path, help="the same landmarks in the fixed image, row by row")
    ev.set_defaults(run=evaluate)

    equi = commands.add_parser("equivariance", help="measure [U,U] and [W,U] translation-equivariance error")
    _common_arguments(equi)
    equi.add_argument("--moving", type=Path, help="moving image (default: a generated vessel pair)")
    equi.add_argument("--fixed", type=Path, help="fixed image, same grid as --moving")
    equi.add_argument("--shift", type=int, default=8,
                      help="voxels: W moves the moving image along the first axis, U the fixed one along the last")
    equi.add_argument("--shift-moving", type=int, nargs="+", help="W per array axis (overrides --shift)")
    equi.add_argument("--shift-fixed", type=int, nargs="+", help="U per array axis (overrides --shift)")
    equi.set_defaults(run=equivariance)
    parser.description = f"Command line: equireg {' | '.join(SUBCOMMANDS)}. Each prints one JSON object."
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _configure(args)
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
