"""Ξ's attention on the CPU, forward + backward: ours against torch's SDPA, the roofline, memory.

``python benchmarks/attention.py`` prints JSON with

* ``main``: batch 8, L = M = 4096, d = 128, 4 value channels (the value needs no gradient, as
  in Ξ), features normalised to length 4 as Ξ's; ours and ``F.scaled_dot_product_attention``
  on the same inputs, fwd and fwd+bwd medians, ``speedup_vs_sdpa`` (fwd+bwd) and
  ``fraction_of_matmul_peak``: the four big products' FLOPs over our fwd+bwd time, divided by
  the rate of the same products as plain bmm measured in this run (``benchmarks/matmul.py``);
  ``speedup_vs_sdpa_at_roofline``: SDPA's time over the FLOPs at the best product rate of the
  run (plain bmm or a 2048³ square product), the most any kernel could gain;
  also the largest differences from SDPA (output and gradients);
* ``retina_default`` / ``retina_paper``: the attention Ξ runs in the default preset (98×70
  images, batch 10) and at the paper's 196×141, shapes taken from the real pooling and padding;
* ``memory``: the peak-RSS growth of one fwd+bwd at batch 1, one thread, and two sizes, each
  in a fresh subprocess (Linux), next to the L·M bytes a dense attention matrix would take.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from common import cpu_parser, emit, parse, timed
from matmul import attention_peak, square_rate
from memory_calibration import peak_growth

from equireg.attention import DEFAULT_CHUNK_SIZE, VALUE_CHANNELS, coordinate_attention
from equireg.wrappers import average_pool

FEATURE_SCALE = 4.0  # Ξ's default: logits within ±16
CHANNELS = 128
PADDING = 9


def inputs(batch: int, length: int, columns: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Ξ-like query/key features (unit vectors × 4) and a coordinate-like value without gradient."""
    generator = torch.Generator().manual_seed(seed)

    def features(rows: int) -> torch.Tensor:
        x = torch.randn(batch, rows, CHANNELS, generator=generator)
        return FEATURE_SCALE * x / x.norm(dim=2, keepdim=True)

    value = torch.rand(batch, columns, VALUE_CHANNELS, generator=generator)
    return features(length), features(columns), value


def sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(query[:, None], key[:, None], value[:, None], scale=1.0)[:, 0]


def ours(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return coordinate_attention(query, key, value)


def forward_backward(attention, query, key, value) -> tuple[torch.Tensor, ...]:
    q, k = query.clone().requires_grad_(), key.clone().requires_grad_()
    out = attention(q, k, value)
    # a fixed upstream gradient, so both kernels differentiate the same thing
    out.backward(torch.ones_like(out))
    return out.detach(), q.grad, k.grad


def compare(batch: int, length: int, columns: int, repeats: int, sdpa_repeats: int) -> dict:
    """Fwd and fwd+bwd medians of ours and SDPA, the speedup, and the largest differences."""
    query, key, value = inputs(batch, length, columns)
    result = {"batch": batch, "length": length, "columns": columns, "channels": CHANNELS,
              "value_channels": VALUE_CHANNELS, "chunk_size": DEFAULT_CHUNK_SIZE}
    with torch.no_grad():
        result["ours_forward"] = timed(lambda: ours(query, key, value), repeats)
        result["sdpa_forward"] = timed(lambda: sdpa(query, key, value), sdpa_repeats)
    result["ours_forward_backward"] = timed(lambda: forward_backward(ours, query, key, value), repeats)
    result["sdpa_forward_backward"] = timed(lambda: forward_backward(sdpa, query, key, value), sdpa_repeats)
    result["speedup_vs_sdpa"] = round(result["sdpa_forward_backward"]["median_s"]
                                      / result["ours_forward_backward"]["median_s"], 2)
    result["speedup_vs_sdpa_forward"] = round(result["sdpa_forward"]["median_s"]
                                              / result["ours_forward"]["median_s"], 2)
    mine, theirs = forward_backward(ours, query, key, value), forward_backward(sdpa, query, key, value)
    result["max_abs_difference_vs_sdpa"] = {
        name: float((a - b).abs().max()) for name, a, b in zip(("output", "grad_query", "grad_key"), mine, theirs)}
    return result


def retina_shapes(image_shape: tuple[int, int]) -> tuple[int, int, tuple[int, ...]]:
    """L, M and Ξ's grid for a 2-D image: CARL runs Ξ after two 2× poolings, keys padded by 9."""
    grid = tuple(average_pool(average_pool(torch.zeros(1, 1, *image_shape))).shape[2:])
    length = grid[0] * grid[1]
    columns = (grid[0] + 2 * PADDING) * (grid[1] + 2 * PADDING)
    return length, columns, grid


def memory_probe(length: int, columns: int) -> dict:
    """In this (fresh) process: peak RSS growth of one fwd+bwd of ours at batch 1.

    Linux only: the peak (VmHWM) is reset just before the call, and the parent sets a fixed
    malloc mmap threshold, so freed blocks go back to the OS and RSS tracks live memory.
    """
    query, key, value = inputs(1, length, columns)
    forward_backward(ours, query[:, :8], key[:, :8], value[:, :8])  # load kernels, warm the allocator
    grown = peak_growth(lambda: forward_backward(ours, query, key, value))
    return {"length": length, "columns": columns, "peak_growth_mib": round(grown / 2**20, 1)}


def memory(sizes: list[int]) -> list[dict]:
    """:func:`memory_probe` per size in a subprocess, with what a dense L×M matrix takes and
    the model ``(2·chunk·M + 3·(L + M)·d)·4`` bytes: two probability blocks, and the inputs'
    gradients, clones and base-2 queries."""
    rows = []
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    for size in sizes:
        command = [sys.executable, str(Path(__file__).resolve()), "--memory-probe", str(size), str(size),
                   "--threads", "1"]
        probe = json.loads(subprocess.run(command, check=True, capture_output=True, text=True,
                                          env=environment).stdout)
        chunk = min(DEFAULT_CHUNK_SIZE, size)
        probe["dense_matrix_mib"] = round(size * size * 4 / 2**20, 1)
        probe["model_mib"] = round((2 * chunk * size + 3 * (size + size) * CHANNELS) * 4 / 2**20, 1)
        rows.append(probe)
    return rows


def main() -> None:
    parser = cpu_parser(__doc__, repeats=5)
    parser.add_argument("--sdpa-repeats", type=int, default=3, help="SDPA is slow: fewer runs")
    parser.add_argument("--memory-probe", nargs=2, type=int, metavar=("L", "M"), help=argparse.SUPPRESS)
    args = parse(parser)
    if args.memory_probe:
        print(json.dumps(memory_probe(*args.memory_probe)))
        return
    batch, size = (2, 512) if args.quick else (8, 4096)
    peak = attention_peak(batch, size, size, CHANNELS, args.repeats)
    main_case = compare(batch, size, size, args.repeats, args.sdpa_repeats)
    flops = 4 * 2 * batch * size * size * CHANNELS
    main_case["ours_gflop_per_s"] = round(flops / main_case["ours_forward_backward"]["median_s"] / 1e9, 1)
    main_case["matmul_peak_gflop_per_s"] = round(peak["gflop_per_s"], 1)
    main_case["fraction_of_matmul_peak"] = round(main_case["ours_gflop_per_s"] / peak["gflop_per_s"], 3)
    # the roofline: no kernel doing these FLOPs beats the best plain product rate of this run
    best = max(peak["gflop_per_s"], square_rate(256 if args.quick else 2048, args.repeats))
    main_case["best_matmul_gflop_per_s"] = round(best, 1)
    main_case["fraction_of_best_matmul"] = round(main_case["ours_gflop_per_s"] / best, 3)
    main_case["speedup_vs_sdpa_at_roofline"] = round(
        main_case["sdpa_forward_backward"]["median_s"] / (flops / best / 1e9), 2)
    result = {"benchmark": "attention", "main": main_case}
    for name, image_shape in ({"retina_default": (49, 35)} if args.quick else
                              {"retina_default": (98, 70), "retina_paper": (196, 141)}).items():
        length, columns, grid = retina_shapes(image_shape)
        result[name] = {"image": list(image_shape), "xi_grid": list(grid),
                        **compare(10, length, columns, args.repeats, args.repeats)}
    result["memory"] = memory([256, 1024] if args.quick else [4096, 16384])
    emit(result)


if __name__ == "__main__":
    main()
