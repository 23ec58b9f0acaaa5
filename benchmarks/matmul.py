"""The fp32 matrix-product FLOP rate of this machine: the roofline of the attention benchmark.

``python benchmarks/matmul.py`` prints GFLOP/s for a square product and for the four batched
products that Ξ's attention costs in a training step (forward QKᵀ, its recomputation, dS·K,
dSᵀ·Q) done as plain ``torch.bmm`` on materialised L×M matrices. ``attention_peak`` is the
number ``benchmarks/attention.py`` divides by.
"""

from __future__ import annotations


import torch

from common import cpu_parser, emit, parse, timed


def square_rate(size: int, repeats: int) -> float:
    """GFLOP/s of one ``size``³ fp32 matrix product."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    seconds = timed(lambda: torch.mm(a, b, out=out), repeats)["median_s"]
    return 2 * size ** 3 / seconds / 1e9


def attention_peak(batch: int, length: int, columns: int, channels: int, repeats: int) -> dict[str, float]:
    """GFLOP/s of attention's four big products as plain bmm: QKᵀ twice, dS·K and dSᵀ·Q."""
    query, key = torch.randn(batch, length, channels), torch.randn(batch, columns, channels)
    scores = torch.empty(batch, length, columns)
    grad_query, grad_key = torch.empty_like(query), torch.empty_like(key)

    def products() -> None:
        torch.bmm(query, key.transpose(1, 2), out=scores)
        torch.bmm(query, key.transpose(1, 2), out=scores)
        torch.bmm(scores, key, out=grad_query)
        torch.bmm(scores.transpose(1, 2), query, out=grad_key)

    timing = timed(products, repeats)
    flops = 4 * 2 * batch * length * columns * channels
    return {"seconds": timing["median_s"], "gflop": flops / 1e9, "gflop_per_s": flops / timing["median_s"] / 1e9}


def main() -> None:
    args = parse(cpu_parser(__doc__, repeats=5))
    size, batch, length = (256, 1, 256) if args.quick else (2048, 8, 4096)
    emit({
        "benchmark": "matmul",
        f"square_{size}_gflop_per_s": round(square_rate(size, args.repeats), 1),
        "attention_products": {"batch": batch, "length": length, "columns": length, "channels": 128,
                               **{k: round(v, 3) for k, v in
                                  attention_peak(batch, length, length, 128, args.repeats).items()}},
    })


if __name__ == "__main__":
    main()
