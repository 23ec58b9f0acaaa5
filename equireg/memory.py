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
fitted as ``a + b·N`` over two sizes (:func:`calibrate`, :func:`calibrate_register`; run
``python -m equireg.memory METHOD DIM SIZE [NETWORK_SIZE]``); the tables keep the slope ``b``. The estimate multiplies by :data:`SAFETY` (allocator
fragmentation, more threads, other options) and adds :data:`FIXED_BYTES` (lazily loaded kernels).
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

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


# --- calibration ----------------------------------------------------------------------------------

def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"/proc/self/status: no {field}")


def peak_growth(function: Callable[[], Any]) -> int:
    """Bytes by which resident memory peaks above its level before ``function`` runs (Linux).

    The kernel's high-water mark is reset first (``/proc/self/clear_refs``), so earlier peaks
    do not hide this one.
    """
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_bytes("VmRSS")
    function()
    return _status_bytes("VmHWM") - before


def calibrate(method: str, dimension: int, size: int) -> dict[str, Any]:
    """Measure one network term: peak growth of a forward pass of a fresh network (inputs
    included) and ``φ`` sampled on a ``(size,) * dimension`` grid, single-threaded. The first
    pass of a process is measured, lazily loaded kernels included: conservative."""
    import torch

    from equireg.training import load_model

    torch.set_num_threads(1)
    net, _ = load_model(None, method, dimension)
    shape = (size,) * dimension
    generator = torch.Generator().manual_seed(0)

    def forward() -> None:
        moving, fixed = (torch.rand(1, 1, *shape, generator=generator) for _ in range(2))
        with torch.no_grad():
            net(moving, fixed).field(shape)

    grown = peak_growth(forward)
    return {"method": method, "dimension": dimension, "size": size, "voxels": _voxels(shape), "bytes": grown,
            "bytes_per_voxel": grown / _voxels(shape)}


def calibrate_register(method: str, dimension: int, size: int, network_size: int) -> dict[str, Any]:
    """Measure ``equireg register`` on a random ``(size,) * dimension`` pair with the network at
    ``network_size``: over two ``size`` s, the slope is the pipeline term."""
    import contextlib
    import io
    import tempfile

    import numpy as np
    import SimpleITK as sitk
    import torch

    from equireg.cli import main

    torch.set_num_threads(1)
    shape = (size,) * dimension
    with tempfile.TemporaryDirectory() as directory:
        for name, seed in (("fixed.mha", 0), ("moving.mha", 1)):
            image = np.random.default_rng(seed).random(shape, dtype=np.float32)
            sitk.WriteImage(sitk.GetImageFromArray(image), f"{directory}/{name}")
        arguments = ["register", "--method", method, "--checkpoint", "none", "--moving", f"{directory}/moving.mha",
                     "--fixed", f"{directory}/fixed.mha", "--out", f"{directory}/out",
                     "--shape", *[str(network_size)] * dimension]
        with contextlib.redirect_stdout(io.StringIO()):
            grown = peak_growth(lambda: main(arguments))
    return {"method": method, "dimension": dimension, "size": size, "network_size": network_size,
            "voxels": _voxels(shape), "bytes": grown, "bytes_per_voxel": grown / _voxels(shape)}


if __name__ == "__main__":
    numbers = [int(value) for value in sys.argv[2:]]
    print(json.dumps(calibrate(sys.argv[1], *numbers) if len(numbers) == 2 else
                     calibrate_register(sys.argv[1], *numbers)))
