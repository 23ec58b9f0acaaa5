"""Training a method on a pair set, with its learning curve on held-out validation pairs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from equireg import devices, training
from equireg.data.datasets import PairBatches
from equireg.experiments.evaluation import dice_rows, lung_rows, register_lung_pairs, register_pairs
from equireg.experiments.jobs import PathLike, load_pairs
from equireg.files import write_csv

#: validation points spread over a training run (its learning curve)
VALIDATIONS_PER_RUN = 20
#: validation points in the last quarter of a run, where the plateau test fits its trend: one pass
#: scatters by a few 0.001 Dice, so five points (20 per run) leave the trend's 95 % interval about
#: +-0.02 wide, twice the bound it is judged against; 25 points narrow it about threefold
#: (:func:`equireg.tables.plateau`)
LAST_QUARTER_VALIDATIONS = 25


def validation_steps(total: int) -> list[int]:
    """The steps after which a run of ``total`` steps is validated: ``VALIDATIONS_PER_RUN`` points
    over the whole run and ``LAST_QUARTER_VALIDATIONS`` more in its last quarter (from 75 % of the
    steps to the end). Validation draws no random numbers, so these do not change the training."""
    spread = np.linspace(0, total, VALIDATIONS_PER_RUN + 1)[1:]
    last_quarter = np.linspace(0.75 * total, total, LAST_QUARTER_VALIDATIONS + 1)
    steps = np.unique(np.round(np.concatenate([spread, last_quarter])).astype(int))
    return [int(step) for step in steps if step >= 1]


def validation_scores(net, pairs: dict[str, np.ndarray]) -> dict[str, float]:
    """What a training run logs on its validation pairs: mean Dice and (with exact maps) vessel
    endpoint error for retina pairs; mean TRE in mm for lung pairs (they carry landmarks); mean
    AAL Dice for brain pairs (they carry the label names), with their unregistered Dice."""
    if "label_names" in pairs:
        from equireg.experiments import brain_evaluation

        return brain_evaluation.validation_scores(net, pairs)
    if "fixed_landmarks" in pairs:
        rows = lung_rows(pairs, *register_lung_pairs(net, pairs))
        return {"val_mtre_mm": float(np.mean([row["mtre_mm"] for row in rows]))}
    maps = register_pairs(net, pairs["moving"], pairs["fixed"])
    rows = dice_rows(pairs, maps)
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

    With ``validation`` (a pair set never used for testing) the run is scored on it at
    :func:`validation_steps`, and ``curve`` gets those scores per step, each row led by the
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
                          validation_steps=set(validation_steps(total)))
    if curve is not None:
        scored = [row for row in rows if any(key.startswith("val_") for key in row)]
        columns = ["step", *[key for key in scored[0] if key.startswith("val_")]] if scored else ["step"]
        write_csv(curve, pd.DataFrame([{**(run or {}), **{k: row[k] for k in columns}} for row in scored],
                                       columns=[*(run or {}), *columns]))
    training.save_model(model, net, method, dimension, settings["options"], list(pairs["moving"].shape[2:]),
                        precision, final_stage=stages[-1] if stages else None)
