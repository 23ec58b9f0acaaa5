"""The brain shift sweep: registering Colin27 pairs with the moving image shifted, scored on AAL.

Per pair and shift: the mean Dice over the AAL labels present in the fixed labels (the paper's
score; labels warped by nearest neighbour), before registration, after it, and through the exact
map (the ceiling); the mean HD95 over those labels (mm); % folds; SDlogJ; the endpoint error
against the exact map inside the fixed brain (mm). Every label's Dice is kept too.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from equireg import metrics
from equireg.data.brain import AXES
from equireg.data.brain_pairs import BrainPair, shift_pair
from equireg.experiments.evaluation import (first_pairs, instance_optimization, io_columns, load_network,
                                            register_pairs, runtime_row, write_runtime)
from equireg.experiments.jobs import PathLike, load_pairs
from equireg.files import write_csv
from equireg.transforms import warp_labels


def _cropped_hd95(prediction: np.ndarray, target: np.ndarray, spacing: float) -> float:
    """:func:`equireg.metrics.hd95` on the box around both masks (plus a voxel): distances between
    their surfaces never leave it, and the distance transforms shrink from the canvas to the box."""
    both = np.argwhere(prediction | target)
    low, high = np.maximum(both.min(axis=0) - 1, 0), both.max(axis=0) + 2
    box = tuple(slice(a, b) for a, b in zip(low, high))
    return metrics.hd95(prediction[box], target[box], (spacing,) * prediction.ndim)


def brain_rows(pairs: dict[str, np.ndarray], coordinate_maps: torch.Tensor
               ) -> tuple[list[dict[str, float]], list[np.ndarray], list[np.ndarray]]:
    """Per pair: the row of measurements (module docstring), the labels scored (present in the fixed
    labels) and their Dice."""
    spacing = float(np.asarray(pairs["spacing"]).ravel()[0])
    moving_labels = torch.from_numpy(pairs["moving_label"].astype(np.int64))
    warped = warp_labels(moving_labels, coordinate_maps).numpy()
    ceiling = warp_labels(moving_labels, torch.from_numpy(pairs["coordinates"])).numpy()
    rows, scored, per_label = [], [], []
    for i in range(len(coordinate_maps)):
        fixed = pairs["fixed_label"][i, 0]
        labels = np.unique(fixed[fixed > 0]).astype(np.int64)
        dice = metrics.label_dice(warped[i, 0], fixed, labels)
        brain = fixed > 0
        rows.append({
            "pair": i,
            "dice_before": float(metrics.label_dice(pairs["moving_label"][i, 0], fixed, labels).mean()),
            "dice": float(dice.mean()),
            "dice_ceiling": float(metrics.label_dice(ceiling[i, 0], fixed, labels).mean()),
            "hd95_mm": float(np.nanmean([_cropped_hd95(warped[i, 0] == k, fixed == k, spacing) for k in labels])),
            "folds_percent": metrics.fold_percentage(coordinate_maps[i:i + 1]),
            "sdlogj": metrics.sd_log_jacobian(coordinate_maps[i:i + 1]),
            "epe_mm": spacing * metrics.endpoint_error_voxels(coordinate_maps[i], pairs["coordinates"][i], brain),
            "labels": len(labels),
        })
        scored.append(labels)
        per_label.append(dice)
    return rows, scored, per_label


def _pair(pairs: dict[str, np.ndarray], i: int) -> BrainPair:
    return BrainPair(pairs["moving"][i, 0], pairs["fixed"][i, 0], pairs["moving_label"][i, 0],
                     pairs["fixed_label"][i, 0], pairs["moving"][i, 0] > 0, pairs["fixed"][i, 0] > 0,
                     pairs["coordinates"][i])


def shifted(pairs: dict[str, np.ndarray], voxels: int, axis: str) -> dict[str, np.ndarray]:
    """The pair set with every moving image, its labels and the exact maps shifted by ``voxels``
    along ITK ``axis`` (:func:`equireg.data.brain_pairs.shift_pair`)."""
    moved = [shift_pair(_pair(pairs, i), voxels, AXES[axis]) for i in range(len(pairs["moving"]))]
    return {**pairs, "moving": np.stack([p.moving for p in moved])[:, None],
            "moving_label": np.stack([p.moving_labels for p in moved])[:, None],
            "coordinates": np.stack([p.coordinates for p in moved])}


def validation_scores(net, pairs: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean AAL Dice of ``net`` on not-shifted pairs (a training run's learning curve), and the
    pairs' unregistered Dice: the level a network must beat before it registers anything."""
    rows, _, _ = brain_rows(pairs, register_pairs(net, pairs["moving"], pairs["fixed"]))
    return {"val_dice": float(np.mean([row["dice"] for row in rows])),
            "val_dice_unregistered": float(np.mean([row["dice_before"] for row in rows]))}


def evaluate_brain(method: str, model: PathLike | None, test: PathLike, table: PathLike, labels_table: PathLike,
                   settings: dict[str, Any], seed: int, shifts: Sequence[int], axis: str,
                   runtime: PathLike | None = None, io: dict[str, Any] | None = None) -> None:
    """The measurements of :func:`brain_rows` for every test pair at every shift (voxels along ITK
    ``axis``); rows name the run (method, seed; with ``io`` the variant "method (IO)" on the first
    ``io["pairs"]`` pairs, :func:`io_columns`) and the shift (voxels and mm). ``labels_table`` gets
    each label's Dice; ``runtime`` the seconds per pair at each shift."""
    pairs = first_pairs(load_pairs(test), io["pairs"] if io else None)
    spacing = float(np.asarray(pairs["spacing"]).ravel()[0])
    names = [str(n) for n in pairs["label_names"]]
    net = load_network(method, model, 3, settings)
    optimization = instance_optimization(net, settings, io)
    rows, label_rows, timings = [], [], []
    for voxels in shifts:
        moved = shifted(pairs, int(voxels), axis)
        seconds: list[float] = []
        maps = register_pairs(net, moved["moving"], moved["fixed"], seconds, optimization)
        run = {"method": method, **io_columns(io), "seed": seed, "axis": axis, "shift_vox": int(voxels),
               "shift_mm": voxels * spacing}
        measured, scored, per_label = brain_rows(moved, maps)
        for row, labels, dice in zip(measured, scored, per_label):
            rows.append({**run, **row})
            label_rows += [{**run, "pair": row["pair"], "label": int(k), "name": names[k - 1], "dice": float(d)}
                           for k, d in zip(labels, dice)]
        timings.append(runtime_row(run, seconds))
    write_csv(table, pd.DataFrame(rows))
    write_csv(labels_table, pd.DataFrame(label_rows))
    write_runtime(runtime, timings, net)
