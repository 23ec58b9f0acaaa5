"""Training-step times of two code versions, alternating: the 3-D lung steps and the 2-D retina steps.

``python benchmarks/step_3d.py --threads 1 --old fa5a2bd`` extracts revision ``--old`` of this
repository (``git archive``) and runs one worker process on it and one on the working tree. The
workers build the same seeded networks and pairs and take Adam steps in turn, old then new, step
for step, so load drifts hit both alike. Steps (the default preset's settings, config.yaml):

* 3-D at 48³, batch 1: CARL's GradICON stage and diffusion stage (``netPhi``, 32 feature channels,
  LNCC σ = 5), GradICON (2 levels, LNCC σ = 5), VoxelMorph (SSD, λ = 0.01);
* 2-D at 98×70, batch 4 (``--no-2d`` skips them): CARL's two stages (LNCC σ = 4), GradICON
  (3 levels), VoxelMorph.

Each in fp32 and bf16 (:mod:`equireg.devices`). Per step: median seconds old and new,
``speedup`` = old / new, and the loss terms of the first step (the same weights, pair and noise
draw in both versions): ``loss_difference`` (largest relative difference over the terms, new
against old in the same precision) and ``bf16_error`` (new bf16 against new fp32, the scale
against which a bf16 difference is judged).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

from common import ROOT, cpu_parser, emit, parse

LNCC_5 = {"name": "lncc", "sigma": 5}
# name -> (method, dimension, builder options, stage, spatial shape, batch)
STEPS: dict[str, tuple[str, int, dict[str, Any], dict[str, Any], tuple[int, ...], int]] = {
    "carl_gradicon_3d": ("carl", 3, {"feature_channels": 32},
                         {"loss": "gradicon", "lr": 3e-4, "lmbda": 1.5, "module": "netPhi", "similarity": LNCC_5},
                         (48, 48, 48), 1),
    "carl_diffusion_3d": ("carl", 3, {"feature_channels": 32},
                          {"loss": "diffusion", "lr": 3e-4, "lmbda": 1.5, "module": "netPhi", "similarity": LNCC_5},
                          (48, 48, 48), 1),
    "gradicon_3d": ("gradicon", 3, {"levels": 2},
                    {"loss": "gradicon", "lr": 1e-3, "lmbda": 1.5, "similarity": LNCC_5}, (48, 48, 48), 1),
    "voxelmorph_3d": ("voxelmorph", 3, {},
                      {"loss": "voxelmorph", "lr": 1e-3, "lmbda": 0.01, "similarity": {"name": "ssd"}},
                      (48, 48, 48), 1),
    "carl_gradicon_2d": ("carl", 2, {}, {"loss": "gradicon", "lr": 3e-4, "lmbda": 1.5, "module": "netPhi"},
                         (98, 70), 4),
    "carl_diffusion_2d": ("carl", 2, {}, {"loss": "diffusion", "lr": 3e-4, "lmbda": 1.5, "module": "netPhi"},
                          (98, 70), 4),
    "gradicon_2d": ("gradicon", 2, {"levels": 3}, {"loss": "gradicon", "lr": 1e-3, "lmbda": 1.5}, (98, 70), 4),
    "voxelmorph_2d": ("voxelmorph", 2, {},
                      {"loss": "voxelmorph", "lr": 1e-3, "lmbda": 0.01, "similarity": {"name": "ssd"}}, (98, 70), 4),
}
PRECISIONS = ("fp32", "bf16")


# --- the worker: one code version, steps on request -------------------------------------------------

def worker(tree: str, threads: int | None) -> None:
    """Serve ``{"step": name, "precision": p}`` lines on stdin with ``{"seconds", "terms"}`` lines."""
    sys.path.insert(0, tree)  # this version's equireg and baselines, ahead of the benchmark's own
    import time

    import torch
    import torch.nn.functional as F

    from equireg import devices, methods, training

    if threads is not None:
        torch.set_num_threads(threads)
    steps: dict[tuple[str, str], Any] = {}

    def build(name: str, precision: str):
        method, dimension, options, stage, shape, batch = STEPS[name]
        torch.manual_seed(0)
        net = methods.build(method, dimension, **options).train()
        devices.set_precision(net, precision)
        loss = training.stage_loss(net, training.Stage(steps=1, **stage))
        optimizer = training.adam(loss.parameters(), stage["lr"])
        generator = torch.Generator().manual_seed(0)
        pool = F.avg_pool2d if dimension == 2 else F.avg_pool3d  # smooth pairs: LNCC needs structure
        images = pool(torch.rand(2 * batch, 1, *shape, generator=generator), 5, 1, 2)
        return loss, optimizer, images[:batch], images[batch:], [0]

    for line in sys.stdin:
        request = json.loads(line)
        key = (request["step"], request["precision"])
        if key not in steps:
            steps[key] = build(*key)
        loss, optimizer, moving, fixed, count = steps[key]
        torch.manual_seed(count[0])  # GradICON's noise: the same draw in both versions
        count[0] += 1
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        terms = loss(moving, fixed)
        terms["loss"].backward()
        optimizer.step()
        seconds = time.perf_counter() - start
        print(json.dumps({"seconds": seconds, "terms": {k: float(v.detach()) for k, v in terms.items()}}),
              flush=True)


class Worker:
    """A worker process on one source tree."""

    def __init__(self, tree: Path, threads: int | None):
        command = [sys.executable, __file__, "--worker", str(tree)]
        if threads is not None:
            command += ["--threads", str(threads)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        cwd=tree)

    def step(self, name: str, precision: str) -> dict[str, Any]:
        self.process.stdin.write(json.dumps({"step": name, "precision": precision}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker on {name} {precision} died (see its stderr)")
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def extract(revision: str, directory: Path) -> Path:
    """The files of ``revision`` of this repository under ``directory``."""
    archive = subprocess.run(["git", "archive", revision], cwd=ROOT, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(directory, filter="data")
    return directory


def relative_difference(a: dict[str, float], b: dict[str, float]) -> float:
    """Largest ``|a - b| / max(|b|, 1e-12)`` over the terms both report (``folds`` excluded: a count)."""
    keys = [k for k in b if k in a and k != "folds"]
    return max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-12) for k in keys)


def main() -> None:
    if "--worker" in sys.argv:
        index = sys.argv.index("--worker")
        threads = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else None
        worker(sys.argv[index + 1], threads)
        return
    parser = cpu_parser(__doc__, repeats=3)
    parser.add_argument("--old", default="fa5a2bd", help="git revision to compare the working tree with")
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS))
    parser.add_argument("--no-2d", action="store_true", help="only the 3-D steps")
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    args = parse(parser)
    names = [n for n in args.steps if not (args.no_2d and STEPS[n][1] == 2)]
    runs = [(n, p) for n in names for p in args.precisions]
    with tempfile.TemporaryDirectory() as directory:
        workers = {"old": Worker(extract(args.old, Path(directory)), args.threads), "new": Worker(ROOT, args.threads)}
        first = {(v, n, p): w.step(n, p)["terms"] for n, p in runs for v, w in workers.items()}  # also warm-up
        seconds: dict[tuple[str, str, str], list[float]] = {}
        for _ in range(args.repeats):
            for n, p in runs:
                for version, w in workers.items():
                    seconds.setdefault((version, n, p), []).append(w.step(n, p)["seconds"])
        for w in workers.values():
            w.close()
    result: dict[str, Any] = {"benchmark": "step_3d", "old": args.old, "steps": {}}
    for n, p in runs:
        old, new = (statistics.median(seconds[(v, n, p)]) for v in ("old", "new"))
        row = {"old_s": round(old, 4), "new_s": round(new, 4), "speedup": round(old / new, 3),
               "loss_difference": float(f"{relative_difference(first[('new', n, p)], first[('old', n, p)]):.2e}"),
               "loss_new": round(first[("new", n, p)]["loss"], 6)}
        if p == "bf16" and "fp32" in args.precisions:
            row["bf16_error"] = float(f"{relative_difference(first[('new', n, 'bf16')], first[('new', n, 'fp32')]):.2e}")
        result["steps"].setdefault(n, {})[p] = row
    result["repeats"] = args.repeats
    emit(result)


if __name__ == "__main__":
    main()
