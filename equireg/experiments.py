"""The benchmark's experiments as library functions; workflow scripts are thin calls into these.

Data sets are ``.npz`` files of float32 arrays ``moving``, ``fixed``, ``moving_label``,
``fixed_label`` (``[N, 1, *S]``), optionally ``coordinates`` (ground truth ``[N, D, *S]``) and,
for lung, ``fixed_landmarks`` / ``moving_landmarks`` (``[N, K, D]`` voxels, array-axis order) and
``spacing`` (``[D]`` mm). Result files hold no timings, so a fixed seed gives identical bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from equireg import devices, metrics, training
from equireg.data.datasets import PairBatches, load_arrays, save_arrays
from equireg.files import write_text
from equireg.transforms import identity_map, warp

#: vessel maps are soft after average pooling; a voxel counts as vessel above this (carl.md §7)
DICE_THRESHOLD = 0.3
#: pooling factor of Xi in CARL's trees: equivariance is measured on sizes 1 + a multiple of it
EQUIVARIANCE_STRIDE = 4
#: pairs registered per forward pass in evaluation
EVALUATION_BATCH = 8

PathLike = str | os.PathLike


def setup_job(log: Sequence[str], threads: int) -> None:
    """Start of a workflow job: stderr (progress bars, warnings) to the rule's log, the rule's
    thread count for torch, and a non-interactive plotting backend."""
    import sys

    import matplotlib

    matplotlib.use("Agg")
    if log:
        sys.stderr = open(log[0], "w", buffering=1)
    torch.set_num_threads(max(1, threads))


def save_pairs(path: PathLike, **arrays: np.ndarray) -> None:
    """Write a pair set atomically and byte-reproducibly."""
    save_arrays(path, arrays)


def load_pairs(path: PathLike) -> dict[str, np.ndarray]:
    """Read a pair set written by :func:`save_pairs`, with a clear error for a broken file."""
    try:
        arrays = dict(load_arrays(path))
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{path}: not a readable pair set ({error})") from None
    missing = {"moving", "fixed"} - set(arrays)
    if missing:
        raise ValueError(f"{path}: pair set lacks {sorted(missing)}")
    return arrays


# --- data ---------------------------------------------------------------------------------------

#: seeds of the generated data, independent of the training seeds
DATA_SEEDS = {"train": 1, "test": 2, "real": 3, "sweep": 4, "val": 5}
#: validation pairs per split when a preset does not say (learning curves, never the test pairs)
VALIDATION_IMAGES, VALIDATION_LUNG_PAIRS = 2, 2
#: the first generated mask index of each split, so train and test never share a vessel tree
MASK_OFFSETS = {"train": 100_000, "test": 200_000, "val": 300_000}


def retina_masks(split: str, settings: dict[str, Any], drive: PathLike | None = None) -> list[np.ndarray]:
    """Full-resolution vessel masks of a split: generated (or DRIVE when configured) for
    train/test, generated for "val" (DRIVE has no images to spare), the real scikit-image fundus
    for "real"."""
    from equireg.data import retina

    if split == "real":
        return [retina.skimage_retina_vessels()]
    if split == "val":
        return [retina.generate_vessel_mask(MASK_OFFSETS["val"] + i)
                for i in range(settings.get("val_images", VALIDATION_IMAGES))]
    count = settings["train_images"] if split == "train" else settings["test_images"]
    if drive:
        from equireg.data.loaders import drive_vessel_masks

        masks = drive_vessel_masks(drive, "training")
        # the paper's split of DRIVE's 20 training images: the first for testing, the next for training
        test = masks[:settings["test_images"]]
        train = masks[settings["test_images"]:settings["test_images"] + settings["train_images"]]
        return train if split == "train" else test
    return [retina.generate_vessel_mask(MASK_OFFSETS[split] + i) for i in range(count)]


def build_retina_set(path: PathLike, split: str, condition: str, settings: dict[str, Any],
                     drive: PathLike | None = None) -> None:
    """One retina pair set: every mask and its vertical flip, ``warps_per_image`` warps each."""
    from equireg.data.perturb import retina_dataset

    # test pairs keep their exact maps for the endpoint error; training needs none
    pairs = retina_dataset(retina_masks(split, settings, drive), condition, settings["warps_per_image"],
                           seed=DATA_SEEDS[split], pool=settings["pool"], with_map=split != "train")
    save_pairs(path, **pairs.arrays())


def build_lung_set(path: PathLike, split: str, settings: dict[str, Any], copdgene: PathLike | None = None) -> None:
    """Lung pairs preprocessed as CT (clamp, [0, 1], lung mask) at ``size``^3, with landmarks.

    Generated phantom pairs (inhale moving, exhale fixed, exact landmarks) by default; with
    ``copdgene`` the test split is DIR-Lab COPDGene cases 1..``pairs`` (expiration moving,
    inspiration fixed, 300 landmarks each), resampled with their spacing kept for TRE in mm.
    """
    shape = (settings["size"],) * 3
    if split == "test" and copdgene:
        from equireg.data.loaders import load_dirlab_copdgene
        from equireg.data.lung import prepare_lung_ct, resample_points

        arrays: dict[str, list] = {key: [] for key in ("moving", "fixed", "moving_landmarks", "fixed_landmarks",
                                                        "spacing")}
        for case in range(1, min(settings["pairs"], 10) + 1):
            pair = load_dirlab_copdgene(copdgene, case)
            for side in ("moving", "fixed"):
                image, spacing = prepare_lung_ct(getattr(pair, side), getattr(pair, f"{side}_mask"), pair.spacing,
                                                 shape)
                arrays[side].append(image[None])
                arrays[f"{side}_landmarks"].append(
                    resample_points(getattr(pair, f"{side}_landmarks"), getattr(pair, side).shape, shape))
            arrays["spacing"].append(spacing)
        stacked = {key: np.stack(value) for key, value in arrays.items()}
        save_pairs(path, moving_label=(stacked["moving"] > 0).astype(np.float32),
                   fixed_label=(stacked["fixed"] > 0).astype(np.float32), **stacked)
        return
    from equireg.data.lung import lung_pair, preprocess_ct

    count = {"train": settings["train_pairs"], "val": settings.get("val_pairs", VALIDATION_LUNG_PAIRS)}.get(
        split, settings["pairs"])
    pairs = [lung_pair((DATA_SEEDS[split], k), shape=shape, landmarks=settings["landmarks"]) for k in range(count)]
    save_pairs(
        path,
        moving=np.stack([preprocess_ct(p.moving, p.moving_mask) for p in pairs])[:, None].astype(np.float32),
        fixed=np.stack([preprocess_ct(p.fixed, p.fixed_mask) for p in pairs])[:, None].astype(np.float32),
        moving_label=np.stack([p.moving_mask for p in pairs])[:, None],
        fixed_label=np.stack([p.fixed_mask for p in pairs])[:, None],
        moving_landmarks=np.stack([p.moving_landmarks for p in pairs]),
        fixed_landmarks=np.stack([p.fixed_landmarks for p in pairs]),
        spacing=np.stack([np.asarray(p.spacing) for p in pairs]),
        coordinates=np.stack([p.coordinates for p in pairs]).astype(np.float32),
    )


# --- training ------------------------------------------------------------------------------------

#: validation points per training run (its learning curve)
VALIDATIONS_PER_RUN = 20


def validation_scores(net, pairs: dict[str, np.ndarray]) -> dict[str, float]:
    """What a training run logs on its validation pairs: mean Dice and (with exact maps) vessel
    endpoint error for retina pairs; mean TRE in mm for lung pairs (they carry landmarks)."""
    maps = register_pairs(net, pairs["moving"], pairs["fixed"])
    if "fixed_landmarks" in pairs:
        return {"val_mtre_mm": float(np.mean([row["mtre_mm"] for row in _lung_rows(pairs, maps)]))}
    rows = _dice_rows(pairs, maps)
    scores = {"val_dice": float(np.mean([row["dice"] for row in rows]))}
    if "epe_vessels_px" in rows[0]:
        scores["val_epe_vessels_px"] = float(np.mean([row["epe_vessels_px"] for row in rows]))
    return scores


def train_method(
    data: PathLike,
    model: PathLike,
    checkpoints: PathLike,
    method: str,
    settings: dict[str, Any],
    batch_size: int,
    seed: int,
    progress: bool = True,
    validation: PathLike | None = None,
    curve: PathLike | None = None,
    run: dict[str, Any] | None = None,
) -> None:
    """Train ``method`` on a pair set and write its model file (resumes from ``checkpoints``).

    With ``validation`` (a pair set never used for testing) the run is scored on it
    ``VALIDATIONS_PER_RUN`` times, and ``curve`` gets those scores per step, each row led by the
    identifying columns ``run`` (e.g. method, train condition, seed).
    """
    pairs = load_pairs(data)
    dimension = pairs["moving"].ndim - 2
    training.seed_everything(seed)
    from equireg import methods

    net = methods.build(method, dimension, **settings["options"])
    device, precision = devices.resolve(settings.get("compute"))
    stages = [training.Stage.from_config(stage) for stage in settings["stages"]]
    # a checkpoint resumes only for the same data and settings
    fingerprint = hashlib.sha256(Path(data).read_bytes() + json.dumps(
        [method, settings["options"], batch_size], sort_keys=True).encode()).hexdigest()
    total = sum(s.steps for s in stages)
    validate = None
    if validation is not None:
        held_out = load_pairs(validation)
        validate = lambda net: validation_scores(net, held_out)  # noqa: E731
    rows = training.train(net, stages, PairBatches(pairs["moving"], pairs["fixed"], batch_size, seed), checkpoints,
                          seed=seed, checkpoint_every=max(1, min(100, total // 10)), progress=progress,
                          fingerprint=fingerprint, device=device, precision=precision, validate=validate,
                          validate_every=max(1, total // VALIDATIONS_PER_RUN))
    if curve is not None:
        scored = [row for row in rows if any(key.startswith("val_") for key in row)]
        columns = ["step", *[key for key in scored[0] if key.startswith("val_")]] if scored else ["step"]
        _write_csv(curve, pd.DataFrame([{**(run or {}), **{k: row[k] for k in columns}} for row in scored],
                                       columns=[*(run or {}), *columns]))
    training.save_model(model, net, method, dimension, settings["options"], list(pairs["moving"].shape[2:]),
                        precision)


# --- evaluation ----------------------------------------------------------------------------------

def load_network(method: str, model: PathLike | None, dimension: int, settings: dict[str, Any]):
    """A trained network (or, for methods without training, a fresh one) in eval mode, on the
    device and in the precision of ``settings["compute"]``."""
    device, precision = devices.resolve(settings.get("compute"))
    net, _ = training.load_model(model or None, method, dimension, settings.get("options", {}), device, precision)
    return net


def register_pairs(net, moving: np.ndarray, fixed: np.ndarray,
                   seconds: list[float] | None = None) -> torch.Tensor:
    """Coordinate maps ``phi`` (``[N, D, *S]``) registering each moving to its fixed image; with
    ``seconds``, each pair's share of the wall time of its batch is appended to it."""
    maps, device = [], devices.of(net)
    with torch.no_grad():
        for start in range(0, len(moving), EVALUATION_BATCH):
            began = time.perf_counter()
            a = torch.from_numpy(moving[start:start + EVALUATION_BATCH]).to(device)
            b = torch.from_numpy(fixed[start:start + EVALUATION_BATCH]).to(device)
            maps.append(net(a, b).field(a.shape[2:]).expand(len(a), *[-1] * (a.dim() - 1)).cpu())
            if seconds is not None:  # .cpu() above waits for the device, so this is the work's time
                seconds += [(time.perf_counter() - began) / len(a)] * len(a)
    return torch.cat(maps)


def _dice_rows(pairs: dict[str, np.ndarray], coordinate_maps: torch.Tensor) -> list[dict[str, float]]:
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


def _examples(pairs: dict[str, np.ndarray], coordinate_maps: torch.Tensor) -> dict[str, np.ndarray]:
    """The first pair with its registration result, for qualitative figures."""
    moving = torch.from_numpy(pairs["moving"][:1])
    return {"moving": pairs["moving"][0, 0], "fixed": pairs["fixed"][0, 0],
            "warped": warp(moving, coordinate_maps[:1]).numpy()[0, 0]}


def _write_csv(path: PathLike, frame: pd.DataFrame) -> None:
    write_text(path, frame.to_csv(index=False, float_format="%.6g", lineterminator="\n"))


def _write_runtime(path: PathLike | None, rows: list[dict[str, Any]], net) -> None:
    """Seconds per registered pair (median over each test set's pairs) for the benchmark files:
    timings stay out of result tables, which are byte-reproducible."""
    if path is not None:
        device = devices.of(net).type
        frame = pd.DataFrame([{**row, "device": device} for row in rows])
        write_text(path, frame.to_csv(sep="\t", index=False, float_format="%.6g"))


def _runtime_row(run: dict[str, Any], seconds: list[float]) -> dict[str, Any]:
    return {**run, "pairs": len(seconds), "seconds_per_pair": float(np.median(seconds))}


def evaluate_retina(method: str, model: PathLike | None, tests: Sequence[PathLike], table: PathLike,
                    examples: PathLike, settings: dict[str, Any], train_condition: str, seed: int,
                    runtime: PathLike | None = None) -> None:
    """The measurements of :func:`_dice_rows` for every pair of every test set; test sets are named
    ``<split>_<condition>.npz``. Every row names its run (method, train condition, seed) and test
    set, so the file says what it is. ``runtime`` gets the seconds per pair of each test set."""
    net = load_network(method, model, 2, settings)
    rows, example_arrays, timings = [], {}, []
    for test in tests:
        name = Path(test).stem
        split, condition = name.split("_", 1)
        pairs = load_pairs(test)
        seconds: list[float] = []
        maps = register_pairs(net, pairs["moving"], pairs["fixed"], seconds)
        run = {"method": method, "train_condition": train_condition, "seed": seed, "test_set": split,
               "test_condition": condition}
        rows += [{**run, **row} for row in _dice_rows(pairs, maps)]
        timings.append(_runtime_row(run, seconds))
        example_arrays.update({f"{name}/{k}": v for k, v in _examples(pairs, maps).items()})
    _write_csv(table, pd.DataFrame(rows))
    save_pairs(examples, **example_arrays)
    _write_runtime(runtime, timings, net)


def evaluate_lung(method: str, model: PathLike | None, test: PathLike, table: PathLike,
                  examples: PathLike, settings: dict[str, Any], seed: int, runtime: PathLike | None = None) -> None:
    """mTRE in mm (before / after) and % folds per lung pair; every row names its method and seed.
    ``runtime`` gets the seconds per pair."""
    pairs = load_pairs(test)
    net = load_network(method, model, 3, settings)
    seconds: list[float] = []
    maps = register_pairs(net, pairs["moving"], pairs["fixed"], seconds)
    shape = pairs["moving"].shape[2:]
    _write_csv(table, pd.DataFrame([{"method": method, "seed": seed, **row} for row in _lung_rows(pairs, maps)]))
    middle = shape[0] // 2
    example = _examples(pairs, maps)
    save_pairs(examples, **{k: v[middle] for k, v in example.items()})
    _write_runtime(runtime, [_runtime_row({"method": method, "seed": seed}, seconds)], net)


def _lung_rows(pairs: dict[str, np.ndarray], coordinate_maps: torch.Tensor) -> list[dict[str, float]]:
    """Per pair: mTRE in mm before and after, Dice and HD95 (mm) of the lung masks, % folds, SDlogJ."""
    shape = pairs["moving"].shape[2:]
    warped = warp(torch.from_numpy(pairs["moving_label"]), coordinate_maps).numpy()
    rows = []
    for i in range(len(coordinate_maps)):
        fixed_points, moving_points = pairs["fixed_landmarks"][i], pairs["moving_landmarks"][i]
        phi = _grid_transform(coordinate_maps[i:i + 1])
        spacing = np.broadcast_to(pairs["spacing"], (len(coordinate_maps), len(shape)))[i]
        after = metrics.landmark_errors_mm(phi, fixed_points, moving_points, shape, shape, spacing)
        before = metrics.unregistered_errors_mm(fixed_points, moving_points, spacing)
        lung, mask = warped[i, 0] > 0.5, pairs["fixed_label"][i, 0] > 0.5
        rows.append({"pair": i, "mtre_before_mm": float(before.mean()), "mtre_mm": float(after.mean()),
                     "dice_lung": metrics.dice(lung, mask), "hd95_lung_mm": metrics.hd95(lung, mask, spacing),
                     "folds_percent": metrics.fold_percentage(coordinate_maps[i:i + 1]),
                     "sdlogj": metrics.sd_log_jacobian(coordinate_maps[i:i + 1])})
    return rows


def _grid_transform(coordinate_map: torch.Tensor):
    """The transform that interpolates a sampled coordinate map."""
    from equireg.transforms import DisplacementTransform

    identity = identity_map(coordinate_map.shape[2:], coordinate_map.device, coordinate_map.dtype)
    return DisplacementTransform(coordinate_map - identity)


def write_json(path: PathLike, value: Any) -> None:
    """Write JSON atomically with sorted keys (byte-reproducible)."""
    write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


# --- capture radius, landscape, toy ---------------------------------------------------------------

def shift_sweep(method: str, model: PathLike | None, table: PathLike, settings: dict[str, Any],
                sweep: dict[str, Any], retina: dict[str, Any]) -> None:
    """Dice against the vertical shift of the fixed image, on warped test masks."""
    from equireg.data.perturb import PairSet, shift_sweep_pairs

    net = load_network(method, model, 2, settings)
    masks = retina_masks("test", retina)
    rows = []
    for k in range(sweep["pairs"]):
        mask = masks[k % len(masks)]
        pairs = shift_sweep_pairs(mask, [(s, 0) for s in sweep["shifts"]], seed=(DATA_SEEDS["sweep"], k),
                                  pool=retina["pool"], with_map=False)
        stacked = PairSet.stack(pairs).arrays()
        maps = register_pairs(net, stacked["moving"], stacked["fixed"])
        for shift, row in zip(sweep["shifts"], _dice_rows(stacked, maps)):
            rows.append({"method": method, "shift_px": shift / retina["pool"], "pair": k,
                         "dice_before": row["dice_before"], "dice": row["dice"]})
    _write_csv(table, pd.DataFrame(rows))


def equivariance(method: str, model: PathLike | None, test: PathLike, path: PathLike, settings: dict[str, Any],
                 pairs: int, shift: int) -> None:
    """[U,U] and [W,U] error (voxels) on the first ``pairs`` not-shifted test pairs: the fixed image
    moves ``shift`` pixels along the columns; in [W,U] the moving image moves ``shift`` along the rows.
    Reports the median over pairs of each pair's median and 95th percentile."""
    from equireg.equivariance import equivariance_report

    net = load_network(method, model, 2, settings)
    data = load_pairs(test)
    # On ICON's [0,1] grid a Downsample tree is exactly shift-equivariant only for sizes N with
    # N - 1 divisible by its pooling factor (4 for Xi); crop to such a size (the margin added by the
    # measurement keeps it when the shift is even).
    crop = tuple(slice(0, n - (n - 1) % EQUIVARIANCE_STRIDE) for n in data["moving"].shape[2:])
    device = devices.of(net)
    reports = [equivariance_report(net, torch.from_numpy(data["moving"][(slice(i, i + 1), slice(None), *crop)]).to(device),
                                   torch.from_numpy(data["fixed"][(slice(i, i + 1), slice(None), *crop)]).to(device),
                                   (shift, 0), (0, shift))
               for i in range(min(pairs, len(data["moving"])))]
    summary = {case: {statistic: float(np.median([r[case][f"{statistic}_voxels"] for r in reports]))
                      for statistic in ("median", "p95")} for case in ("UU", "WU")}
    write_json(path, {"method": method, "shift_moving": [shift, 0], "shift_fixed": [0, shift],
                      "pairs": len(reports), **summary})


def landscape(train: PathLike, model: PathLike, table: PathLike, *, method: str, settings: dict[str, Any],
              stride: int) -> None:
    """The loss landscape of a translation with and without a trained network ``Phi`` (``method``'s
    model trained on not-shifted pairs), SSD, on the first four training pairs, at every
    ``stride``-th mid-pixel translation along the rows."""
    from equireg.landscape import loss_curve, mid_pixel_offsets
    from equireg.losses import SSD

    net = load_network(method, model, 2, settings)
    pairs = load_pairs(train)
    device = devices.of(net)
    moving = torch.from_numpy(pairs["moving"][:4]).to(device)
    fixed = torch.from_numpy(pairs["fixed"][:4]).to(device)
    curve = loss_curve(net, moving, fixed, mid_pixel_offsets(moving.shape[2], stride), SSD())
    _write_csv(table, curve)


def toy1d(table: PathLike) -> None:
    """The 1-D toy curve: x, the attention estimate, the analytic A^-1 o B, interior flag."""
    from equireg.toy1d import solve_toy

    result = solve_toy()
    interior = (result["x"] >= result["margin"]) & (result["x"] <= 1 - result["margin"])
    _write_csv(table, pd.DataFrame({"x": result["x"], "estimate": result["estimate"], "analytic": result["analytic"],
                                    "interior": interior.astype(int)}))

