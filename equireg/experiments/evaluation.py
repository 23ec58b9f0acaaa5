"""Registering pair sets with a network and measuring the result: Dice, HD95, folds, SDlogJ and
endpoint error (retina), TRE and lung-mask overlap (lung), seconds per pair."""

from __future__ import annotations

import time
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from equireg import devices, metrics, training
from equireg.experiments.jobs import PathLike, load_pairs, save_pairs
from equireg.files import write_csv
from equireg.instance_optimization import InstanceOptimization
from equireg.transforms import Transform, map_points, warp

#: vessel maps are soft after average pooling; a voxel counts as vessel above this (carl.md §7)
DICE_THRESHOLD = 0.3
#: pairs registered per forward pass in evaluation
EVALUATION_BATCH = 8


def load_network(method: str, model: PathLike | None, dimension: int, settings: dict[str, Any]):
    """A trained network (or, for methods without training, a fresh one) in eval mode, on the
    device and in the precision of ``settings["compute"]``."""
    device, precision = devices.resolve(settings.get("compute"))
    net, _ = training.load_model(model or None, method, dimension, settings.get("options", {}), device, precision)
    return net


def registrations(net, moving: np.ndarray, fixed: np.ndarray, seconds: list[float] | None = None,
                  optimization: InstanceOptimization | None = None) -> Iterator[tuple[slice, Transform]]:
    """Each batch of pairs (its slice) with the transform registering its moving images to its
    fixed ones; with ``optimization``, each pair alone, by the network fine-tuned on it. With
    ``seconds``, each pair's share of its batch's wall time is appended: from loading the batch
    until the next is asked for, so it includes what the caller computes from the transform (and
    waits for the device when that work copies its result to the CPU)."""
    device = devices.of(net)
    size = 1 if optimization is not None else EVALUATION_BATCH
    for start in range(0, len(moving), size):
        began = time.perf_counter()
        batch = slice(start, min(start + size, len(moving)))
        a, b = (torch.from_numpy(images[batch]).to(device) for images in (moving, fixed))
        if optimization is not None:
            # the loss may draw noise (GradICON): seeded by the pair, so a pair's result does not
            # depend on which pairs came before it
            torch.manual_seed(start)
            transform = optimization.register(net, a, b)
        else:
            with torch.no_grad():
                transform = net(a, b)
        yield batch, transform
        if seconds is not None:
            seconds += [(time.perf_counter() - began) / len(a)] * len(a)


def _sampled_map(transform: Transform, batch: slice, shape: Sequence[int]) -> torch.Tensor:
    """``transform`` sampled on the voxel grid as ``[batch size, D, *shape]`` on the CPU."""
    field = transform.field(shape)
    return field.expand(batch.stop - batch.start, *field.shape[1:]).cpu()


def register_pairs(net, moving: np.ndarray, fixed: np.ndarray, seconds: list[float] | None = None,
                   optimization: InstanceOptimization | None = None) -> torch.Tensor:
    """Coordinate maps ``phi`` (``[N, D, *S]``) registering each moving to its fixed image; with
    ``seconds``, each pair's seconds; with ``optimization``, after fine-tuning on each pair (see
    :func:`registrations`)."""
    with torch.no_grad():
        return torch.cat([_sampled_map(transform, batch, moving.shape[2:])
                          for batch, transform in registrations(net, moving, fixed, seconds, optimization)])


def register_lung_pairs(net, pairs: dict[str, np.ndarray], seconds: list[float] | None = None,
                        optimization: InstanceOptimization | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """Coordinate maps as :func:`register_pairs`, and each fixed landmark mapped by the network's
    transform itself (``[N, K, D]`` voxel positions in the moving image): TRE is not limited by
    the sampling of the map on the grid."""
    shape, device = pairs["moving"].shape[2:], devices.of(net)
    maps, mapped = [], []
    with torch.no_grad():
        for batch, transform in registrations(net, pairs["moving"], pairs["fixed"], seconds, optimization):
            maps.append(_sampled_map(transform, batch, shape))
            mapped.append(map_points(transform, pairs["fixed_landmarks"][batch], shape, shape, device,
                                     what="fixed landmarks"))
    return torch.cat(maps), np.concatenate(mapped)


def dice_rows(pairs: dict[str, np.ndarray], coordinate_maps: torch.Tensor) -> list[dict[str, float]]:
    """Per pair: Dice before and after, HD95 (px), % folds and SDlogJ; with a ground-truth map
    (synthetic pairs) also the endpoint error against it, over the image and over the fixed
    vessels, and the Dice that the exact map reaches (the ceiling set by the label threshold and
    interpolation)."""
    moving_label = torch.from_numpy(pairs["moving_label"])
    warped = warp(moving_label, coordinate_maps).numpy()
    exact = pairs.get("coordinates")
    ceiling = warp(moving_label, torch.from_numpy(exact)).numpy() if exact is not None else None
    rows = []
    for i in range(len(coordinate_maps)):
        fixed = pairs["fixed_label"][i] > DICE_THRESHOLD
        row = {
            "pair": i,
            "dice_before": metrics.dice(pairs["moving_label"][i] > DICE_THRESHOLD, fixed),
            "dice": metrics.dice(warped[i] > DICE_THRESHOLD, fixed),
            "hd95_px": metrics.hd95(warped[i, 0] > DICE_THRESHOLD, fixed[0]),
            "folds_percent": metrics.fold_percentage(coordinate_maps[i:i + 1]),
            "sdlogj": metrics.sd_log_jacobian(coordinate_maps[i:i + 1]),
        }
        if exact is not None:
            row.update({
                "epe_px": metrics.endpoint_error_voxels(coordinate_maps[i], exact[i]),
                "epe_vessels_px": metrics.endpoint_error_voxels(coordinate_maps[i], exact[i], fixed[0]),
                "dice_ceiling": metrics.dice(ceiling[i] > DICE_THRESHOLD, fixed),
            })
        rows.append(row)
    return rows


def examples_of(pairs: dict[str, np.ndarray], coordinate_maps: torch.Tensor) -> dict[str, np.ndarray]:
    """The first pair with its registration result, for qualitative figures."""
    moving = torch.from_numpy(pairs["moving"][:1])
    return {"moving": pairs["moving"][0, 0], "fixed": pairs["fixed"][0, 0],
            "warped": warp(moving, coordinate_maps[:1]).numpy()[0, 0]}


def write_runtime(path: PathLike | None, rows: list[dict[str, Any]], net) -> None:
    """Seconds per registered pair (median over each test set's pairs) for the benchmark files:
    timings stay out of result tables, which are byte-reproducible."""
    if path is not None:
        device = devices.of(net).type
        frame = pd.DataFrame([{**row, "device": device} for row in rows])
        write_csv(path, frame, separator="\t")


def runtime_row(run: dict[str, Any], seconds: list[float]) -> dict[str, Any]:
    return {**run, "pairs": len(seconds), "seconds_per_pair": float(np.median(seconds))}


def split_and_condition(pairs: dict[str, np.ndarray], path: PathLike) -> tuple[str, str]:
    """The split and condition that a retina pair set says it is (see ``build_retina_set``)."""
    if "split" not in pairs or "condition" not in pairs:
        raise ValueError(f"{path}: pair set does not say its split and condition; rebuild it (rule retina_data)")
    return str(pairs["split"].item()), str(pairs["condition"].item())


def instance_optimization(net, settings: dict[str, Any],
                          io: dict[str, Any] | None) -> InstanceOptimization | None:
    """The evaluation variant "method (IO)" of the workflow's ``instance_optimization`` settings
    (``steps``, ``lr``): ``net`` fine-tuned on each pair with the loss of its last training stage."""
    if io is None:
        return None
    if not settings.get("stages"):
        raise ValueError("instance optimisation needs a trained method: it fine-tunes with the training loss")
    return InstanceOptimization.of(net, training.Stage.from_config(settings["stages"][-1]), io["steps"], io["lr"])


def io_columns(io: dict[str, Any] | None) -> dict[str, Any]:
    """The columns that say a row was registered after instance optimisation, and how."""
    return {} if io is None else {"io_steps": io["steps"], "io_lr": io["lr"]}


def first_pairs(pairs: dict[str, np.ndarray], count: int | None) -> dict[str, np.ndarray]:
    """The first ``count`` pairs of a pair set (``None``: all): every per-pair array (2-D or more,
    one entry per pair along its first axis) cut; scalars and per-set arrays kept."""
    total = len(pairs["moving"])
    if count is None or count >= total:
        return pairs
    return {name: value[:count] if value.ndim >= 2 and len(value) == total else value
            for name, value in pairs.items()}


def evaluate_retina(method: str, model: PathLike | None, tests: Sequence[PathLike], table: PathLike,
                    examples: PathLike | None, settings: dict[str, Any], train_condition: str, seed: int,
                    runtime: PathLike | None = None, io: dict[str, Any] | None = None) -> None:
    """The measurements of :func:`dice_rows` for every pair of every test set. Every row names its
    run (method, train condition, seed) and test set (split and condition, as the pair set says),
    so the file says what it is; so does ``examples`` (its ``method``). ``runtime`` gets the seconds
    per pair of each test set. With ``io`` (``steps``, ``lr``, ``pairs``), the evaluation variant
    "method (IO)" on the first ``pairs`` pairs of each set, its rows marked by :func:`io_columns`."""
    net = load_network(method, model, 2, settings)
    optimization = instance_optimization(net, settings, io)
    rows, example_arrays, timings = [], {}, []
    for test in tests:
        pairs = load_pairs(test)
        split, condition = split_and_condition(pairs, test)
        pairs = first_pairs(pairs, io["pairs"]) if io else pairs
        seconds: list[float] = []
        maps = register_pairs(net, pairs["moving"], pairs["fixed"], seconds, optimization)
        run = {"method": method, "train_condition": train_condition, "seed": seed, "test_set": split,
               "test_condition": condition, **io_columns(io)}
        rows += [{**run, **row} for row in dice_rows(pairs, maps)]
        timings.append(runtime_row(run, seconds))
        example_arrays.update({f"{split}_{condition}/{k}": v for k, v in examples_of(pairs, maps).items()})
    write_csv(table, pd.DataFrame(rows))
    if examples is not None:
        save_pairs(examples, method=np.array(method), **example_arrays)
    write_runtime(runtime, timings, net)


def evaluate_lung(method: str, model: PathLike | None, test: PathLike, table: PathLike,
                  examples: PathLike | None, settings: dict[str, Any], seed: int, runtime: PathLike | None = None,
                  io: dict[str, Any] | None = None) -> None:
    """mTRE in mm (before / after) and % folds per lung pair; every row names its method and seed,
    and ``examples`` its method. ``runtime`` gets the seconds per pair. ``io``: as
    :func:`evaluate_retina`."""
    pairs = first_pairs(load_pairs(test), io["pairs"] if io else None)
    net = load_network(method, model, 3, settings)
    seconds: list[float] = []
    maps, mapped = register_lung_pairs(net, pairs, seconds, instance_optimization(net, settings, io))
    shape = pairs["moving"].shape[2:]
    rows = lung_rows(pairs, maps, mapped)
    run = {"method": method, "seed": seed, **io_columns(io)}
    write_csv(table, pd.DataFrame([{**run, **row} for row in rows]))
    if examples is not None:
        # the middle coronal slice (array axis 1, front to back): breathing moves along axis 0,
        # head to feet, which an axial slice would cut across
        middle = shape[1] // 2
        example = examples_of(pairs, maps)
        save_pairs(examples, method=np.array(method), **{k: v[:, middle] for k, v in example.items()})
    write_runtime(runtime, [runtime_row(run, seconds)], net)


def lung_rows(pairs: dict[str, np.ndarray], coordinate_maps: torch.Tensor,
              mapped_landmarks: np.ndarray) -> list[dict[str, float]]:
    """Per pair: mTRE in mm before and after (``mapped_landmarks``: the fixed landmarks mapped into
    the moving image, see :func:`register_lung_pairs`), Dice and HD95 (mm) of the lung masks,
    % folds, SDlogJ."""
    shape = pairs["moving"].shape[2:]
    warped = warp(torch.from_numpy(pairs["moving_label"]), coordinate_maps).numpy()
    rows = []
    for i in range(len(coordinate_maps)):
        fixed_points, moving_points = pairs["fixed_landmarks"][i], pairs["moving_landmarks"][i]
        spacing = np.broadcast_to(pairs["spacing"], (len(coordinate_maps), len(shape)))[i]
        after = metrics.point_errors_mm(mapped_landmarks[i], moving_points, spacing)
        before = metrics.point_errors_mm(fixed_points, moving_points, spacing)
        lung, mask = warped[i, 0] > 0.5, pairs["fixed_label"][i, 0] > 0.5
        rows.append({"pair": i, "mtre_before_mm": float(before.mean()), "mtre_mm": float(after.mean()),
                     "dice_lung": metrics.dice(lung, mask), "hd95_lung_mm": metrics.hd95(lung, mask, spacing),
                     "folds_percent": metrics.fold_percentage(coordinate_maps[i:i + 1]),
                     "sdlogj": metrics.sd_log_jacobian(coordinate_maps[i:i + 1])})
    return rows
