"""Helpers shared by several test files."""

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def assert_gradients_match(ours, upstream, rtol=1e-5):
    """Per parameter, ``|g - g_up| <= rtol * |g_up|`` (norms). The biases of the up-convolutions
    feed a training-mode BatchNorm, so their gradients are analytically zero: both must be
    round-off small instead."""
    pairs = [(name, p.grad, q.grad) for (name, p), q in zip(ours.named_parameters(), upstream.parameters())]
    largest = max(g.norm() for _, _, g in pairs)
    for name, grad, expected in pairs:
        if "upConvs" in name and name.endswith("bias"):
            assert max(grad.norm(), expected.norm()) < 1e-5 * largest, name
            continue
        error = (grad - expected).norm()
        assert error <= rtol * expected.norm(), f"{name}: relative error {error / expected.norm():.2e}"


def copy_workflow(destination: Path) -> Path:
    """A copy of the workflow (Snakefile, config, rules, profiles) to run Snakemake in."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "config", "workflow", "profiles"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, destination / name)
    return destination
