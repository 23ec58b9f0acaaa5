"""Calibrate the memory tables of :mod:`equireg.memory`: peak resident-memory growth of one method
in a fresh process.

``python benchmarks/memory_calibration.py METHOD DIM SIZE`` measures the network term (a no-grad
forward pass and ``φ`` sampled on a ``SIZE^DIM`` grid); ``... METHOD DIM SIZE NETWORK_SIZE``
measures ``equireg register`` on a random pair of that size with the network at ``NETWORK_SIZE``
(the pipeline term, from the slope over two sizes). Prints one JSON object. Linux only.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


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
    return {"method": method, "dimension": dimension, "size": size, "voxels": math.prod(shape), "bytes": grown,
            "bytes_per_voxel": grown / math.prod(shape)}


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
            "voxels": math.prod(shape), "bytes": grown, "bytes_per_voxel": grown / math.prod(shape)}


if __name__ == "__main__":
    numbers = [int(value) for value in sys.argv[2:]]
    print(json.dumps(calibrate(sys.argv[1], *numbers) if len(numbers) == 2 else
                     calibrate_register(sys.argv[1], *numbers)))
