"""Helpers shared by several test files."""

import copy
import shutil
from pathlib import Path
from typing import Callable

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]

# float32 gradients of a deep network carry round-off on the scale of the gradient flowing through
# it, i.e. of its largest gradient, not of each parameter's own (often cancelling) sum: about ten
# float32 ulps (eps = 1.2e-7) of the largest gradient.
ROUND_OFF = 1e-6
# A gradient that is analytically zero is all round-off: a few hundred sums of such terms.
ZERO_GRADIENT = 1e-5


def zero_gradient_parameters(net: nn.Module, output: Callable[[nn.Module], torch.Tensor]) -> set[str]:
    """Names of the vector parameters whose gradient is analytically zero, so that a computed one
    is round-off: a convolution bias in front of a training-mode BatchNorm adds a constant per
    channel, which the batch mean takes out again (directly, or through sums and interpolations);
    and anything behind a zero-initialised last layer has no influence yet.

    Found from what the network computes, not from names: shifting such a parameter by a random
    constant per channel leaves ``output(net)`` unchanged up to round-off. Only vectors (one value
    per channel) can be such constants, so weights are not probed. ``net`` is not touched.
    """
    probe = copy.deepcopy(net).train()
    with torch.no_grad():
        reference = output(probe)
        scale = reference.abs().max()
        zero = set()
        generator = torch.Generator().manual_seed(0)
        for name, parameter in probe.named_parameters():
            if parameter.dim() != 1:
                continue
            saved = parameter.clone()
            parameter.add_(torch.randn(parameter.shape, generator=generator))
            if (output(probe) - reference).abs().max() <= 1e-4 * scale:
                zero.add(name)
            parameter.copy_(saved)
    return zero


def assert_gradients_close(ours: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                           zero: set[str], rtol: float = 1e-5) -> None:
    """Per parameter, ``|g - g_expected| <= rtol |g_expected| + ROUND_OFF * largest`` (norms), and
    for the parameters in ``zero`` (analytically zero gradient) both gradients below
    ``ZERO_GRADIENT * largest``; ``largest`` is the network's largest gradient norm."""
    assert ours.keys() == expected.keys()
    largest = max(g.norm() for g in expected.values())
    for name, grad in ours.items():
        target = expected[name]
        if name in zero:
            assert max(grad.norm(), target.norm()) <= ZERO_GRADIENT * largest, \
                f"{name}: analytically zero gradient, got {grad.norm():.2e} and {target.norm():.2e}"
            continue
        error = (grad - target).norm()
        assert error <= rtol * target.norm() + ROUND_OFF * largest, \
            f"{name}: |error| {error:.2e}, |gradient| {target.norm():.2e}, largest {largest:.2e}"


def assert_gradients_match(ours: nn.Module, upstream: nn.Module, zero: set[str], rtol: float = 1e-5) -> None:
    """:func:`assert_gradients_close` for two networks with the same parameter order."""
    names = [name for name, _ in ours.named_parameters()]
    assert_gradients_close(dict(zip(names, (p.grad for p in ours.parameters()))),
                           dict(zip(names, (q.grad for q in upstream.parameters()))), zero, rtol)


def copy_workflow(destination: Path) -> Path:
    """A copy of the workflow (Snakefile, config, rules, profiles) to run Snakemake in."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "config", "workflow", "profiles"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, destination / name)
    return destination
