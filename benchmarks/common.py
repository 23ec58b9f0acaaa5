"""Shared helpers of the benchmark scripts: timing by medians, the machine's description, JSON out.

Every script prints one JSON object on stdout. Timings are wall-clock medians of several runs
after one warm-up run; ``load_average_1min`` records how busy the machine was, because on a
shared 2-core machine a concurrent job can double any number here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

# the scripts run as `python benchmarks/NAME.py` from the repository root or anywhere else
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """What a number depends on: cores, torch threads and version, the CPU, the current load."""
    return {
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> dict[str, Any]:
    """Wall-clock seconds of ``fn()``: median, min and max of ``repeats`` runs after ``warmup`` runs."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return {"median_s": round(statistics.median(runs), 4), "min_s": round(min(runs), 4),
            "max_s": round(max(runs), 4), "repeats": repeats}


def cpu_parser(doc: str, repeats: int) -> argparse.ArgumentParser:
    """The options every CPU benchmark takes: ``--threads``, ``--repeats`` (default ``repeats``) and
    ``--quick``; described by the first line of the script's docstring ``doc``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    return parser


def parse(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the command line and apply ``--threads``."""
    args = parser.parse_args()
    set_threads(args.threads)
    return args


def set_threads(threads: int | None) -> None:
    """Use ``threads`` intra-op threads (``None``: torch's default, one per core)."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)


def emit(result: dict[str, Any]) -> None:
    """Print ``result`` after the environment as indented JSON on stdout."""
    print(json.dumps({**environment(), **result}, indent=2))
