"""Where networks run and in which precision: the one home of the ``device`` and ``precision`` settings.

``device``: ``auto`` (CUDA when available, else the CPU), ``cpu`` or ``cuda`` (``cuda:N`` too).
``precision``: ``auto``, ``fp32`` or ``bf16``. bf16 means autocast to bfloat16 inside the
convolution stacks that gain from it (Ξ's featurizer, VoxelMorph's U-Net; see
:func:`set_precision`), which return float32. Everything else runs outside autocast, in float32:
coordinate arithmetic (identity maps, composition, warping, finite differences, Jacobians), the
losses, Ξ's attention and the tallUNet2 steps. bf16 has 8 bits of mantissa: near 1 it resolves
steps of 4e-3, coarser than a voxel of a 256-voxel axis and than GradICON's finite-difference step
1e-3. ``auto`` picks bf16 only where the hardware computes it natively (AMX or AVX512-BF16 on the
CPU, a CUDA device with bf16 support): emulated bf16 is slower than fp32.

CUDA kernels are not bit-reproducible (atomics in convolution backward and grid_sample), so
runs on a GPU repeat only up to round-off; runs on one CPU repeat bit for bit.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import ContextManager, Iterator

import torch
from torch import nn

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The torch device for a ``device`` setting; ``ValueError`` for an unknown one or an absent GPU."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: no CUDA device is available (torch {torch.__version__}, "
                             f"CUDA build: {torch.version.cuda or 'no'}); use device 'auto' or 'cpu'")
        return torch.device(name)
    raise ValueError(f"device {name!r}: expected one of {', '.join(DEVICES)} (or cuda:N)")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 products natively (not emulated)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    """``fp32`` or ``bf16`` for a ``precision`` setting on ``device``."""
    if name == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if name in ("fp32", "bf16"):
        return name
    raise ValueError(f"precision {name!r}: expected one of {', '.join(PRECISIONS)}")


def autocast(device: torch.device, precision: str) -> ContextManager[None]:
    """The context the networks run in: bf16 autocast of convolutions and products, or nothing."""
    if precision == "fp32":
        return nullcontext()
    if precision != "bf16":
        raise ValueError(f"precision {precision!r}: expected 'fp32' or 'bf16' once resolved")
    return torch.autocast(device.type, dtype=torch.bfloat16)


def set_precision(net: nn.Module, precision: str) -> None:
    """Run ``net``'s convolution stacks (the modules with a ``precision`` attribute: Ξ's featurizer,
    VoxelMorph's network) in ``precision`` ("fp32" or "bf16"); the rest stays float32."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision {precision!r}: expected 'fp32' or 'bf16' once resolved")
    for module in net.modules():
        if hasattr(module, "precision"):
            module.precision = precision


@contextmanager
def convolutions(precision: str, x: torch.Tensor) -> Iterator[torch.Tensor]:
    """The region of a convolution stack: in bf16, autocast with ``x`` in channels-last layout
    (oneDNN's bf16 convolutions are fast only there: a U-Net step gains 1.5x with it and
    nothing without it), yielding ``x`` in the layout to use; in fp32, ``x`` as it is."""
    if precision == "fp32":
        yield x
        return
    layout = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())
    with autocast(x.device, precision):
        yield x.contiguous(memory_format=layout) if layout else x


def of(net: nn.Module) -> torch.device:
    """The device ``net``'s parameters live on (the CPU for a network without parameters)."""
    parameter = next(net.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def resolve(compute: dict[str, str] | None) -> tuple[torch.device, str]:
    """Device and resolved precision of a ``compute`` setting ``{"device": ..., "precision": ...}``
    (missing keys: ``auto``)."""
    compute = compute or {}
    device = resolve_device(compute.get("device", "auto"))
    return device, resolve_precision(compute.get("precision", "auto"), device)
