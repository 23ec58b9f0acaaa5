"""Our training steps against the upstream libraries', same sizes, same run, on the CPU.

``python benchmarks/step_vs_upstream.py`` times Adam steps at 128², batch 4, of

* GradICON, 3 levels, LNCC σ=4, λ=1.5: ``baselines.gradicon.build`` + ``equireg.losses.GradICONLoss``
  against icon_registration 1.1.9 (``tallUNet2`` steps, ``TwoStepRegistration``,
  ``DownsampleRegistration``, ``GradientICON``), with identical weights;
* VoxelMorph (VxmDense, MSE, λ=0.01): ``baselines.voxelmorph`` against voxelmorph 0.2,
  with identical weights;

each a whole training step (loss, backward, the optimiser each library trains with: our fused
Adam, upstream scripts' ``torch.optim.Adam``), alternating ours and theirs run by run so that a
change of load hits both, and prints the medians and ``ratio`` = ours / upstream (below 1: we
are faster). Needs the ``peers`` extra.
"""

from __future__ import annotations

import inspect
import os
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from common import cpu_parser, emit, parse

from baselines import gradicon, voxelmorph
from equireg import training
from equireg.losses import LNCC, SSD, GradICONLoss

LMBDA_GRADICON, LMBDA_VOXELMORPH, LR = 1.5, 0.01, 1e-4


def images(batch: int, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    pair = F.avg_pool2d(torch.rand(2 * batch, 1, *shape, generator=generator), 5, 1, 2)
    return pair[:batch], pair[batch:]


def adam_step(loss_fn, optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """One training step: zero the gradients, ``loss_fn().backward()``, Adam update."""

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()
    return step


def ours_optimizer(parameters) -> torch.optim.Optimizer:
    """The optimiser equireg trains with (fused Adam)."""
    return training.adam(parameters, LR)


def theirs_optimizer(parameters) -> torch.optim.Optimizer:
    """The optimiser the upstream training scripts build: ``torch.optim.Adam`` with defaults."""
    return torch.optim.Adam(parameters, lr=LR)


def gradicon_steps(batch: int, shape: tuple[int, int]) -> tuple[Callable[[], None], Callable[[], None]]:
    import icon_registration as icon
    from icon_registration import networks

    def level():
        return icon.FunctionFromVectorField(networks.tallUNet2(dimension=2))

    torch.manual_seed(0)
    theirs_net = level()
    for _ in range(2):
        theirs_net = icon.TwoStepRegistration(icon.DownsampleRegistration(theirs_net, dimension=2), level())
    theirs = icon.GradientICON(theirs_net, icon.LNCC(sigma=4), LMBDA_GRADICON)
    theirs.assign_identity_map((batch, 1, *shape))
    ours_net = gradicon.build(2, levels=3)
    ours_net.load_state_dict(theirs_net.state_dict(), strict=True)
    ours = GradICONLoss(ours_net, LNCC(4), LMBDA_GRADICON)
    moving, fixed = images(batch, shape)
    return (adam_step(lambda: ours(moving, fixed)["loss"], ours_optimizer(ours.parameters())),
            adam_step(lambda: theirs(moving, fixed).all_loss, theirs_optimizer(theirs.parameters())))


def import_voxelmorph():
    """voxelmorph 0.2 on its PyTorch backend (it still calls inspect.getargspec, gone in 3.11)."""
    os.environ.setdefault("VXM_BACKEND", "pytorch")
    os.environ.setdefault("NEURITE_BACKEND", "pytorch")
    if not hasattr(inspect, "getargspec"):
        inspect.getargspec = lambda f: tuple(inspect.getfullargspec(f))[:4]
    import voxelmorph as vxm
    return vxm


def voxelmorph_steps(batch: int, shape: tuple[int, int]) -> tuple[Callable[[], None], Callable[[], None]]:
    vxm = import_voxelmorph()
    torch.manual_seed(0)
    theirs = vxm.networks.VxmDense(shape)
    ours_net = voxelmorph.build(2)
    ours_net.load_state_dict(theirs.state_dict(), strict=True)
    ours = voxelmorph.VoxelMorphLoss(ours_net, SSD(), LMBDA_VOXELMORPH)
    mse = vxm.losses.MSE()
    moving, fixed = images(batch, shape)

    def theirs_loss() -> torch.Tensor:
        warped, velocity = theirs(moving, fixed)
        # voxelmorph 0.2's Grad is 3-D only: its N-D l2 form, as later releases, times loss_mult 2
        penalty = sum(torch.diff(velocity, dim=axis).pow(2).flatten(1).mean(-1) for axis in (2, 3)).mean() / 2
        return mse.loss(fixed, warped) + LMBDA_VOXELMORPH * 2 * penalty
    return (adam_step(lambda: ours(moving, fixed)["loss"], ours_optimizer(ours.parameters())),
            adam_step(theirs_loss, theirs_optimizer(theirs.parameters())))


def interleaved(ours, theirs, repeats: int) -> dict:
    """Medians of ``repeats`` alternating runs of each, after one warm-up run of each."""
    ours(), theirs()
    times = {"ours": [], "upstream": []}
    for _ in range(repeats):
        for name, step in (("ours", ours), ("upstream", theirs)):
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    result = {f"{name}_median_s": round(statistics.median(runs), 4) for name, runs in times.items()}
    result["ratio"] = round(result["ours_median_s"] / result["upstream_median_s"], 3)
    result["repeats"] = repeats
    return result


def main() -> None:
    args = parse(cpu_parser(__doc__, repeats=9))
    batch, shape = (2, (64, 64)) if args.quick else (4, (128, 128))
    emit({"benchmark": "step_vs_upstream", "batch": batch, "shape": list(shape),
          "gradicon_3_levels": interleaved(*gradicon_steps(batch, shape), args.repeats),
          "voxelmorph": interleaved(*voxelmorph_steps(batch, shape), args.repeats)})


if __name__ == "__main__":
    main()
