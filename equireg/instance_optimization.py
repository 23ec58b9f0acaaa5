"""Instance optimisation (IO): fine-tune a trained network on one pair before registering it."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from equireg.training import Stage, adam, stage_loss
from equireg.transforms import Transform

#: the paper's instance optimisation (carl.md §4): Adam steps and learning rate
PAPER_STEPS, PAPER_LR = 50, 2e-5

Loss = Callable[[torch.Tensor, torch.Tensor], dict]


def training_loss(net: nn.Module, final_stage: Stage) -> nn.Module:
    """The loss ``net`` was trained with last (its schedule's ``final_stage``), on all its weights:
    the paper fine-tunes the whole network, whatever sub-network the stage trained."""
    return stage_loss(net, dataclasses.replace(final_stage, module=""))


def instance_optimize(
    net: nn.Module, loss: Loss, moving: torch.Tensor, fixed: torch.Tensor, steps: int = PAPER_STEPS,
    lr: float = PAPER_LR, progress: bool = False,
) -> Transform:
    """Run ``steps`` Adam steps at ``lr`` on ``loss(moving, fixed)["loss"]`` and register the pair.

    ``loss`` must train ``net`` (e.g. a loss module whose ``regis_net`` is ``net``; carl.md §4:
    the training loss, 50 steps, lr 2e-5). The network keeps its train/eval mode throughout.
    Its parameters and buffers are restored afterwards, also on error, so the next pair starts
    from the trained weights (upstream leaks the fine-tuned weights from pair to pair). The
    returned transform holds detached fields computed with the fine-tuned weights. ``progress``
    shows a bar of the steps on stderr.
    """
    if steps < 0:
        raise ValueError(f"instance_optimize: steps must be >= 0, got {steps}")
    if lr <= 0:
        raise ValueError(f"instance_optimize: lr must be > 0, got {lr}")
    snapshot = {name: value.detach().clone() for name, value in net.state_dict().items()}
    try:
        optimizer = adam(net.parameters(), lr)
        with torch.enable_grad():  # also when called from evaluation code under no_grad
            for _ in tqdm(range(steps), disable=not progress, file=sys.stderr, desc="instance optimisation",
                          unit="step"):
                optimizer.zero_grad(set_to_none=True)
                loss(moving, fixed)["loss"].backward()
                optimizer.step()
        with torch.no_grad():
            return net(moving, fixed)
    finally:
        net.load_state_dict(snapshot)


@dataclass(frozen=True)
class InstanceOptimization:
    """Fine-tune a network on each pair before registering it: ``steps`` Adam steps at ``lr`` on
    ``loss``, a loss module (or any callable returning ``{"loss": ...}``) that trains the network
    (see :func:`instance_optimize`)."""

    loss: Loss
    steps: int
    lr: float = PAPER_LR
    progress: bool = False

    @classmethod
    def of(cls, net: nn.Module, final_stage: Stage, steps: int, lr: float = PAPER_LR,
           progress: bool = False) -> "InstanceOptimization":
        """Instance optimisation of ``net`` with the loss of its schedule's ``final_stage``."""
        return cls(training_loss(net, final_stage), steps, lr, progress)

    def register(self, net: nn.Module, moving: torch.Tensor, fixed: torch.Tensor) -> Transform:
        """The transform of ``net`` fine-tuned on this pair (or batch); ``net``'s weights are restored."""
        return instance_optimize(net, self.loss, moving, fixed, self.steps, self.lr, self.progress)
