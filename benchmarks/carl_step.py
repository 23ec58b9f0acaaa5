"""One CARL training step on the CPU and where its time goes.

``python benchmarks/carl_step.py`` builds ``methods.build("carl", 2)`` and times Adam steps on
98×70 pairs at batch 4 (the default preset's retina setting) for the two losses CARL trains
with, the diffusion loss (stage 1) and GradICON (stage 2), both on ``net.netPhi`` with LNCC σ=4
and λ=1.5 as the default preset. Per loss it prints the step's median and its forward,
backward and optimizer phases, and per part the fwd+bwd time of each sub-network run alone
on the inputs it receives inside the step (captured by forward hooks), times its number of
calls per step: Ξ's featurizer, Ξ's attention kernel, each U-Net; "rest" is the step minus
those parts (warps, similarity, regulariser, Adam, Python). The featurizer's FLOPs and rate
put it against the matrix-product roofline of ``benchmarks/matmul.py``. ``top_ops`` lists the operators
with the most self time in one profiled step (torch.profiler).

Run it on two versions of the code (e.g. ``git stash``) with ``--label`` to compare them.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch.profiler import profile

from attention import inputs as attention_inputs
from common import cpu_parser, emit, parse, timed

from equireg import methods
from equireg.attention import CoordinateAttention, Featurizer, coordinate_attention
from equireg.losses import similarity
from equireg.unet import TallUNet2

LMBDA = 1.5


def images(batch: int, shape: tuple[int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth random pair (random images make LNCC and warps degenerate)."""
    generator = torch.Generator().manual_seed(seed)
    pair = F.avg_pool2d(torch.rand(2 * batch, 1, *shape, generator=generator), 5, 1, 2)
    return pair[:batch], pair[batch:]


def capture_calls(net: torch.nn.Module, run) -> dict[str, list]:
    """The inputs every featurizer, Ξ and U-Net receives during ``run()``, by part name."""
    calls: dict[str, list] = defaultdict(list)
    handles = []
    for name, module in net.named_modules():
        if isinstance(module, (Featurizer, CoordinateAttention, TallUNet2)):
            key = "featurizer" if isinstance(module, Featurizer) else (
                "xi" if isinstance(module, CoordinateAttention) else f"unet[{name}]")
            handles.append(module.register_forward_pre_hook(
                lambda _, args, key=key: calls[key].append(tuple(a.detach() for a in args))))
    run()
    for handle in handles:
        handle.remove()
    return calls


def part_times(net: torch.nn.Module, calls: dict[str, list], repeats: int) -> dict[str, dict]:
    """fwd+bwd median of each part alone, on the first captured input, times the calls per step."""
    parts = {}
    for key, inputs in calls.items():
        if key == "xi":
            xi = next(m for m in net.modules() if isinstance(m, CoordinateAttention))
            fixed = inputs[0][1]
            grid = fixed.shape[2:]
            padded = [n + 2 * xi.padding for n in grid]
            # Ξ-like features of the shapes Ξ builds (the kernel's time does not depend on values)
            query, keys, value = attention_inputs(fixed.shape[0], math.prod(grid), math.prod(padded))

            def run() -> None:
                q, k = query.clone().requires_grad_(), keys.clone().requires_grad_()
                coordinate_attention(q, k, value, xi.chunk_size).sum().backward()
            name = "attention_kernel"
            shapes = {"query": list(query.shape), "key": list(keys.shape)}
        else:
            module = next(m for n, m in net.named_modules()
                          if (key == "featurizer" and isinstance(m, Featurizer)) or key == f"unet[{n}]")
            args = inputs[0]

            def run(module=module, args=args) -> None:
                # a U-Net's moving image is a warp of the network's output: it carries a gradient
                live = [a.clone().requires_grad_(isinstance(module, TallUNet2) and i == 0) for i, a in enumerate(args)]
                module(*live).sum().backward()
            name = key
            shapes = {"input": list(args[0].shape)}
            if isinstance(module, Featurizer):
                shapes["gflop"] = round(featurizer_gflop(module, args[0]), 2)
        seconds = timed(run, repeats)["median_s"]
        parts[name] = {"calls_per_step": len(inputs), **shapes, "fwd_bwd_s": seconds,
                       "per_step_s": round(seconds * len(inputs), 4)}
        if "gflop" in shapes:
            parts[name]["gflop_per_s"] = round(shapes["gflop"] / seconds, 1)
    return parts


def featurizer_gflop(featurizer: Featurizer, image: torch.Tensor) -> float:
    """FLOPs of one featurizer fwd+bwd: each conv's forward and weight gradient, and the input
    gradient of all but the stem (whose input, the image, needs none)."""
    pixels = image.shape[0] * math.prod(image.shape[2:])
    flops = 0
    for index, conv in enumerate(featurizer.convs):
        forward = 2 * conv.weight.numel() * pixels
        flops += forward * (2 if index == 0 else 3)
    return flops / 1e9


def top_ops(step, count: int = 8) -> list[dict]:
    """Operators with the most self CPU time in one step."""
    with profile() as profiler:
        step()
    events = sorted(profiler.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:count]
    return [{"op": e.key, "calls": e.count, "self_ms": round(e.self_cpu_time_total / 1e3, 1)} for e in events]


def benchmark_loss(loss_name: str, batch: int, shape: tuple[int, int], repeats: int) -> dict:
    torch.manual_seed(0)
    net = methods.build("carl", 2)
    trained = net.netPhi  # the default preset's stages 1-2 train CARL without Ψ₃
    loss = methods.loss_class(loss_name)(trained, similarity("lncc", sigma=4), LMBDA)
    optimizer = torch.optim.Adam(loss.parameters(), lr=3e-4)
    moving, fixed = images(batch, shape, 0)
    state = {}

    def forward() -> None:
        optimizer.zero_grad(set_to_none=True)
        state["loss"] = loss(moving, fixed)["loss"]

    def step() -> None:
        forward()
        state["loss"].backward()
        optimizer.step()

    result = {"step": timed(step, repeats), "forward": timed(forward, repeats)}

    def backward() -> None:
        forward()
        state["loss"].backward()
    result["backward_s"] = round(timed(backward, repeats)["median_s"] - result["forward"]["median_s"], 4)
    result["optimizer"] = timed(optimizer.step, repeats)
    calls = capture_calls(trained, forward)
    result["parts"] = part_times(trained, calls, repeats)
    result["parts"]["rest"] = {"per_step_s": round(
        result["step"]["median_s"] - sum(p["per_step_s"] for p in result["parts"].values()), 4)}
    result["top_ops"] = top_ops(step)
    return result


def main() -> None:
    parser = cpu_parser(__doc__, repeats=5)
    parser.add_argument("--label", default="", help="a tag for the JSON, e.g. the commit measured")
    args = parse(parser)
    batch, shape = (2, (36, 28)) if args.quick else (4, (98, 70))
    emit({"benchmark": "carl_step", "label": args.label, "batch": batch, "shape": list(shape),
          **{loss: benchmark_loss(loss, batch, shape, args.repeats) for loss in ("diffusion", "gradicon")}})


if __name__ == "__main__":
    main()
