"""Peak-memory estimates, checked before a volume meets a network: a clear error up front
instead of an out-of-memory kill halfway through.

The model is linear in the voxel count, which holds for every method here: U-Net activations
scale with the voxels, and Ξ's chunked attention keeps a ``chunk × M`` block (``M`` the voxels at
1/4 resolution), never ``L × M``. Two measured terms, both in bytes per voxel:

* :data:`NETWORK_BYTES_PER_VOXEL` — one no-grad forward pass at batch 1 plus sampling ``φ`` on
  the same grid, per method and dimension, for the builders' default options;
* :data:`PIPELINE_BYTES_PER_VOXEL` — what ``equireg register`` holds per voxel of the fixed
  image around the network: the images, ``φ`` sampled at full size, the warped image and the
  float64 ITK displacement field with its intermediates.

Both are the growth of peak resident memory (the kernel's high-water mark) in a fresh process,
fitted as ``a + b·N`` over two sizes (``benchmarks/memory_calibration.py METHOD DIM SIZE [NETWORK_SIZE]``); the tables keep the slope ``b``. The estimate multiplies by :data:`SAFETY` (allocator
fragmentation, more threads, other options) and adds :data:`FIXED_BYTES` (lazily loaded kernels).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

#: measured slopes, bytes per voxel of the network input (see the module docstring), rounded up to
#: 10; sizes fitted: 2-D 512 and 1024 (carl_draft, transformer_only: 256 and 512), 3-D 72 and 96
NETWORK_BYTES_PER_VOXEL: dict[tuple[str, int], float] = {
    ("gradicon", 2): 470, ("voxelmorph", 2): 520, ("carl", 2): 480, ("carl_draft", 2): 910,
    ("transformer_only", 2): 320, ("unet_only", 2): 80, ("classical", 2): 110,
    ("gradicon", 3): 380, ("voxelmorph", 3): 420, ("carl", 3): 400, ("carl_draft", 3): 740,
    ("unet_only", 3): 50, ("classical", 3): 140,
    # the peak did not grow from 72³ to 96³ (Ξ runs at 1/16 size; constant terms dominate): the
    # whole peak at 96³ per voxel instead of a slope
    ("transformer_only", 3): 260,
}
#: measured slopes, bytes per voxel of the fixed image (moving of the same size) for ``equireg
#: register`` with the network at a fixed small size; gradicon and carl, fitted over 2-D 1024 and
#: 2048, 3-D 128 and 192
PIPELINE_BYTES_PER_VOXEL: dict[int, float] = {2: 160, 3: 260}
SAFETY = 1.5
FIXED_BYTES = 256 * 2**20


def _voxels(shape: Sequence[int]) -> int:
    return math.prod(int(n) for n in shape)


def network_bytes(method: str, shape: Sequence[int]) -> int:
    """Estimated peak bytes of one forward pass of ``method`` on a ``shape`` input (batch 1).

    A method without its own measurement gets the largest slope of its dimension.
    """
    dimension = len(shape)
    slope = NETWORK_BYTES_PER_VOXEL.get((method, dimension))
    if slope is None:
        slope = max(v for (_, d), v in NETWORK_BYTES_PER_VOXEL.items() if d == dimension)
    return int(SAFETY * slope * _voxels(shape))


def pipeline_bytes(shape: Sequence[int]) -> int:
    """Estimated bytes ``equireg register`` holds around the network for a fixed image of ``shape``."""
    return int(SAFETY * PIPELINE_BYTES_PER_VOXEL[len(shape)] * _voxels(shape))


def image_bytes(shape: Sequence[int]) -> int:
    """Bytes of one input image as read and converted: the SimpleITK image (up to float64) and
    three float32 copies (array, normalised, unnormalised tensor): 8 + 3·4 = 20 per voxel."""
    return int(SAFETY * 20 * _voxels(shape))


def available_bytes() -> int:
    """Memory this process can still take: ``MemAvailable``, capped by a cgroup v2 limit if any."""
    candidates = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    if not candidates:
        candidates.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            candidates.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(0, min(candidates))


def _gib(count: int) -> str:
    return f"{count / 2**30:.2f} GiB"


def require(needed: int, what: str, advice: str = "") -> None:
    """Raise ``ValueError`` naming ``what`` if ``needed`` bytes (plus :data:`FIXED_BYTES`) exceed
    :func:`available_bytes`."""
    available = available_bytes()
    total = needed + FIXED_BYTES
    if total > available:
        raise ValueError(f"{what}: needs an estimated {_gib(total)} of memory but only {_gib(available)} "
                         f"is available{'; ' + advice if advice else ''}")
