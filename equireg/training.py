"""Training: staged schedules, atomic checkpoints, exact resume, and the model file format.

A run is a list of :class:`Stage` s trained one after the other with Adam. Batches come from a
callable ``batches(step) -> (moving, fixed)`` that is a pure function of the global step, so a run
killed at any moment and started again continues from its last checkpoint and ends with the same
weights as an uninterrupted run: the checkpoint holds the weights, the optimiser state, the RNG
state (GradICON draws noise every step) and the log rows.
"""

from __future__ import annotations

import csv
import io
import os
import random
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Iterable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from equireg import devices, methods
from equireg.files import atomic_path, write_text
from equireg.losses import similarity as make_similarity

MODEL_FORMAT = "equireg-model/1"
Batches = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Stage:
    """One phase of a schedule: a loss trained for ``steps`` Adam steps at ``lr``.

    ``module`` is the attribute path of the sub-network this stage trains (``""``: all of it),
    e.g. ``"netPhi"`` to train CARL without its last U-Net before adding it.
    """

    loss: str
    steps: int
    lr: float
    lmbda: float
    similarity: dict[str, Any] = field(default_factory=lambda: {"name": "lncc", "sigma": 4})
    module: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Stage":
        unknown = set(config) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown training stage keys {sorted(unknown)}")
        return cls(**config)


def adam(parameters: Iterable[nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam with torch's defaults, as upstream trains, in its fused form: the same update in one
    kernel over all tensors (on the CPU about 6x faster than the per-tensor loop, ~6 % of a
    GradICON step)."""
    return torch.optim.Adam(parameters, lr=lr, fused=True)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def stage_loss(net: nn.Module, stage: Stage) -> nn.Module:
    """The loss module of ``stage``, training ``net`` (or its sub-network ``stage.module``)."""
    trained = net.get_submodule(stage.module) if stage.module else net
    similarity_options = dict(stage.similarity)
    similarity = make_similarity(similarity_options.pop("name"), **similarity_options)
    return methods.loss_class(stage.loss)(trained, similarity, stage.lmbda, **stage.options)


def _write_log(path: Path, rows: list[dict[str, float]]) -> None:
    if not rows:
        return
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def _schedule(stages: list[Stage], steps: int) -> list[tuple[dict[str, Any], int, int]]:
    """The first ``steps`` steps of a schedule as (stage settings, first step, end step) pieces:
    everything the weights after ``steps`` steps depend on, besides the data, seed and network."""
    pieces, start = [], 0
    for stage in stages:
        if start >= steps:
            break
        if stage.steps > 0:  # a stage's length matters only through the pieces' ends
            settings = {key: value for key, value in asdict(stage).items() if key != "steps"}
            pieces.append((settings, start, min(start + stage.steps, steps)))
        start += stage.steps
    return pieces


def _resumable(state: dict[str, Any], stages: list[Stage], seed: int, fingerprint: str | None) -> str | None:
    """Why a checkpoint cannot continue this run (``None``: it can)."""
    step = state["step"]
    if step > sum(stage.steps for stage in stages):
        return f"it is at step {step}, past the end of this schedule"
    if "schedule" not in state:  # written before schedules were recorded: trusted as before
        return None
    saved = [(settings, start, end) for settings, start, end in state["schedule"]]
    if saved != _schedule(stages, step):
        return "its first steps followed another schedule"
    if state["seed"] != seed:
        return f"it was trained with seed {state['seed']}, not {seed}"
    if state.get("fingerprint") != fingerprint:
        return "it was trained on other data or settings (fingerprint differs)"
    return None


def train(
    net: nn.Module,
    stages: list[Stage],
    batches: Batches,
    directory: str | os.PathLike,
    *,
    seed: int = 0,
    checkpoint_every: int = 100,
    progress: bool = True,
    fingerprint: str | None = None,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    validate: Callable[[nn.Module], dict[str, float]] | None = None,
    validation_steps: Collection[int] = (),
) -> list[dict[str, float]]:
    """Train ``net`` through ``stages``; resume from ``directory/checkpoint.pt`` if present.

    With ``validate``, at each of ``validation_steps`` and after the last step the network (in eval
    mode, without gradients) is scored on held-out pairs and the scores join that step's log row:
    the learning curve. Validation draws no random numbers, so it does not change the training.

    ``net`` is moved to ``device`` (a :mod:`equireg.devices` setting) and its convolutions run in
    ``precision`` ("fp32" or "bf16"); batches are moved there step by step. A checkpoint written
    on one device resumes on any other.

    Writes ``directory/checkpoint.pt`` every ``checkpoint_every`` steps and at the end, and
    ``directory/log.csv`` with every loss term of every step. Returns the log rows.

    A checkpoint is resumed only if it belongs to this run: the same schedule up to its step, the
    same seed, a state dict that fits ``net`` and the same ``fingerprint`` (an identifier of the
    data and settings, e.g. a hash, chosen by the caller). Otherwise training starts over, with a
    warning, rather than silently mixing two runs.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint_path = directory / "checkpoint.pt"
    for stale in (*directory.glob(".checkpoint.*.pt"), *directory.glob(".log.*.csv")):
        stale.unlink()  # temporaries of a killed run (see files.atomic_path)
    total = sum(stage.steps for stage in stages)
    device = devices.resolve_device(device)
    net.to(device)
    devices.set_precision(net, precision)
    seed_everything(seed)
    step, rows, optimizer_state = 0, [], None
    if checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path)
        initial = {name: tensor.clone() for name, tensor in net.state_dict().items()}
        reason = _resumable(state, stages, seed, fingerprint)
        if reason is None:
            try:
                net.load_state_dict(state["model"])
            except RuntimeError as error:
                net.load_state_dict(initial)
                reason = f"its weights do not fit this network ({str(error).splitlines()[0]})"
        if reason is None:
            step, rows, optimizer_state = state["step"], state["log"], state["optimizer"]
            torch.set_rng_state(state["rng"])
        else:
            warnings.warn(f"{checkpoint_path}: not resumed, training starts over: {reason}", stacklevel=2)

    def save() -> None:
        _save({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
               "rng": torch.get_rng_state(), "log": rows, "seed": seed, "fingerprint": fingerprint,
               "schedule": _schedule(stages, step)}, checkpoint_path)
        _write_log(directory / "log.csv", rows)

    bar = tqdm(total=total, initial=step, disable=not progress, desc="training", unit="step")
    stage_start = 0
    for index, stage in enumerate(stages):
        stage_end = stage_start + stage.steps
        if step >= stage_end:
            stage_start = stage_end
            continue
        loss = stage_loss(net, stage)
        optimizer = adam(loss.parameters(), stage.lr)
        if optimizer_state is not None and step > stage_start:  # resuming inside this stage
            optimizer.load_state_dict(optimizer_state)
        optimizer_state = None
        net.train()
        while step < stage_end:
            moving, fixed = (images.to(device, non_blocking=True) for images in batches(step))
            optimizer.zero_grad(set_to_none=True)
            terms = loss(moving, fixed)
            if not torch.isfinite(terms["loss"]):
                # stop before the weights and the checkpoint are corrupted; resuming repeats the step
                raise FloatingPointError(
                    f"{directory}: training loss at step {step + 1} is not finite ({float(terms['loss'].detach())}); "
                    f"precision {precision}: try precision fp32 or a smaller learning rate")
            terms["loss"].backward()
            optimizer.step()
            step += 1
            row = {"stage": index, "step": step, **{k: float(torch.as_tensor(v).detach()) for k, v in terms.items()}}
            if validate is not None and (step in validation_steps or step == total):
                row.update(_validated(net, validate))
            rows.append(row)
            bar.update(1)
            bar.set_postfix(stage=index, loss=f"{row['loss']:.4f}")
            if step % checkpoint_every == 0 or step == stage_end:
                save()
        stage_start = stage_end
    bar.close()
    if not stages or total == 0:
        _write_log(directory / "log.csv", rows)
    return rows


def _validated(net: nn.Module, validate: Callable[[nn.Module], dict[str, float]]) -> dict[str, float]:
    net.eval()
    try:
        with torch.no_grad():
            return {key: float(value) for key, value in validate(net).items()}
    finally:
        net.train()


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a training checkpoint, with a clear error for a corrupt file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises several types for truncated/corrupt files
        raise ValueError(f"{path}: corrupt or unreadable checkpoint ({error.__class__.__name__}: {error}); "
                         "delete it to train from scratch") from None
    missing = {"model", "optimizer", "step", "rng", "log"} - set(state if isinstance(state, dict) else ())
    if missing:
        raise ValueError(f"{path}: not a training checkpoint (lacks {sorted(missing)}); delete it to train from scratch")
    return state


# --- the model file: what `equireg register --checkpoint` reads -------------------------------------

def save_model(path: str | os.PathLike, net: nn.Module, method: str, dimension: int,
               options: dict[str, Any], input_shape: list[int], precision: str = "fp32",
               final_stage: Stage | None = None) -> None:
    """Write a trained network with what is needed to rebuild it, atomically; ``trained_with``
    records the device type and precision it was trained in (weights are stored for the CPU) and
    ``final_stage`` the last stage of its schedule, whose loss instance optimisation fine-tunes with."""
    state = {name: tensor.cpu() for name, tensor in net.state_dict().items()}
    trained_with = {"device": devices.of(net).type, "precision": precision}
    if final_stage is not None:
        trained_with["final_stage"] = asdict(final_stage)
    _save({"format": MODEL_FORMAT, "method": method, "dimension": dimension, "options": options,
           "input_shape": list(input_shape), "state_dict": state, "trained_with": trained_with}, path)


def _save(value: Any, path: str | os.PathLike) -> None:
    """``torch.save`` atomically and byte-reproducibly: saved to a file, torch names the archive
    inside after the (temporary, random) file name; saved to a buffer it is always "archive"."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    with atomic_path(path) as temporary:
        temporary.write_bytes(buffer.getvalue())


def _build(method: str, dimension: int, options: dict[str, Any], source: str) -> nn.Module:
    try:
        return methods.build(method, dimension, **options)
    except TypeError as error:  # an option the builder does not take
        raise ValueError(f"{source}: {method} does not take options {options} ({error})") from None


def load_model(path: str | os.PathLike | None, method: str, dimension: int,
               options: dict[str, Any] | None = None, device: torch.device | str = "cpu",
               precision: str = "fp32") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a network from a model file (``None``: freshly initialised, seeded) in eval mode,
    on ``device`` with its convolutions in ``precision``, whatever it was trained on.

    Raises ``ValueError`` naming the file if it is corrupt, not a model file, or of another method
    or dimension.
    """
    if path is None:
        seed_everything(0)
        net = _placed(_build(method, dimension, options or {}, "options"), device, precision)
        return net, {"method": method, "dimension": dimension, "options": options or {}, "input_shape": None,
                     "final_stage": None}
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such checkpoint file")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        text = str(error).strip()
        if text.startswith("Weights only load failed"):  # torch's advice to unpickle anything does not apply
            reason = "not a PyTorch file of tensors"
        else:
            reason = text.split(". ")[0].splitlines()[0] if text else error.__class__.__name__
        raise ValueError(f"{path}: corrupt or unreadable checkpoint ({reason})") from None
    if not isinstance(saved, dict) or saved.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path}: not an equireg model file (expected format {MODEL_FORMAT})")
    missing = {"method", "dimension", "options", "input_shape", "state_dict"} - set(saved)
    if missing:
        raise ValueError(f"{path}: incomplete model file (lacks {sorted(missing)})")
    if saved["method"] != method:
        raise ValueError(f"{path}: checkpoint of method {saved['method']!r}, not {method!r}")
    if saved["dimension"] != dimension:
        raise ValueError(f"{path}: checkpoint of a {saved['dimension']}-D network, images are {dimension}-D")
    net = _build(method, dimension, saved["options"], str(path))
    try:
        net.load_state_dict(saved["state_dict"])
    except RuntimeError as error:
        raise ValueError(f"{path}: weights do not fit the {method} network ({str(error).splitlines()[0]})") from None
    info = {key: saved[key] for key in ("method", "dimension", "options", "input_shape")}
    final_stage = saved.get("trained_with", {}).get("final_stage")
    info["final_stage"] = Stage.from_config(final_stage) if final_stage else None
    return _placed(net, device, precision), info


def _placed(net: nn.Module, device: torch.device | str, precision: str) -> nn.Module:
    devices.set_precision(net, precision)
    return net.to(devices.resolve_device(device)).eval()

