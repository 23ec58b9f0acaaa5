"""Instance optimisation (IO): fine-tune a trained network on one pair before registering it."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from equireg.training import adam
from equireg.transforms import Transform

Loss = Callable[[torch.Tensor, torch.Tensor], dict]


def instance_optimize(
    net: nn.Module, loss: Loss, moving: torch.Tensor, fixed: torch.Tensor, steps: int = 50, lr: float = 2e-5
) -> Transform:
    """Run ``steps`` Adam steps at ``lr`` on ``loss(moving, fixed)["loss"]`` and register the pair.

    ``loss`` must train ``net`` (e.g. a loss module whose ``regis_net`` is ``net``; carl.md §4:
    the training loss, 50 steps, lr 2e-5). The network keeps its train/eval mode throughout.
    Its parameters and buffers are restored afterwards, also on error, so the next pair starts
    from the trained weights (upstream leaks the fine-tuned weights from pair to pair). The
    returned transform holds detached fields computed with the fine-tuned weights.
    """
    if steps < 0:
        raise ValueError(f"instance_optimize: steps must be >= 0, got {steps}")
    if lr <= 0:
        raise ValueError(f"instance_optimize: lr must be > 0, got {lr}")
    snapshot = {name: value.detach().clone() for name, value in net.state_dict().items()}
    try:
        optimizer = adam(net.parameters(), lr)
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss(moving, fixed)["loss"].backward()
            optimizer.step()
        with torch.no_grad():
            return net(moving, fixed)
    finally:
        net.load_state_dict(snapshot)
