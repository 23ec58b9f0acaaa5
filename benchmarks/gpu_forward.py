"""3-D CARL forward pass at 175³ on a CUDA GPU, against the paper's 2.1 s.

``python benchmarks/gpu_forward.py`` builds ``methods.build("carl", 3)`` (fresh weights, eval
mode, no gradient), runs it on one random 175³ pair and prints the median of several
synchronised forward passes, the peak GPU memory and the paper's figure for comparison. On
CUDA, Ξ's attention runs only on the fused SDPA kernels (flash / memory-efficient). Exits
with status 1 and a message when no CUDA device is present.
"""

from __future__ import annotations

import argparse
import sys

import torch

from common import emit, timed

from equireg import methods

PAPER_SECONDS = 2.1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=175)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_forward: no CUDA device (torch.cuda.is_available() is False); "
                 "run this on a machine with an NVIDIA GPU and a CUDA build of torch")
    device = torch.device("cuda")
    torch.manual_seed(0)
    net = methods.build("carl", 3).to(device).eval()
    shape = (1, 1, args.size, args.size, args.size)
    moving, fixed = torch.rand(shape, device=device), torch.rand(shape, device=device)

    def forward() -> None:
        with torch.inference_mode():
            net(moving, fixed).field(shape[2:], moving)  # the network and its map on the full grid
        torch.cuda.synchronize()

    torch.cuda.reset_peak_memory_stats()
    timing = timed(forward, args.repeats)
    emit({"benchmark": "gpu_forward", "device": torch.cuda.get_device_name(), "size": args.size,
          "forward": timing, "paper_s": PAPER_SECONDS,
          "ratio_to_paper": round(timing["median_s"] / PAPER_SECONDS, 3),
          "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)})


if __name__ == "__main__":
    main()
