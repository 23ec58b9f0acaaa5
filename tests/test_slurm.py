"""The SLURM profile: what it asks sbatch for (checked against stand-in SLURM commands), and a run
through a real single-node SLURM (munge + slurmctld + slurmd started here) whose results match a
local run byte for byte."""

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import copy_workflow

pytest.importorskip("snakemake_executor_plugin_slurm", reason="needs the `slurm` extra (pip install -e '.[slurm]')")

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# Jobs inherit the submitting environment (sbatch --export=ALL): the venv's python and snakemake
# must come first on PATH for them, as they do for the submitting process.
VENV_BIN = str(Path(sys.executable).parent)
SLURM_PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
SLURM_BINARIES = ["/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged", "/usr/bin/sbatch", "/usr/bin/srun",
                  "/usr/bin/squeue", "/usr/bin/sinfo", "/usr/bin/scontrol", "/usr/bin/munge"]
# The SLURM client commands the plugin calls.
CLIENT_COMMANDS = ["sbatch", "squeue", "sacct", "sinfo", "scontrol", "scancel", "sacctmgr", "sshare"]


def _gpu_requests(call: str) -> list[str]:
    return [arg for arg in shlex.split(call) if arg.startswith(("--gpus", "--gres=gpu", "--gpus-per"))]


def test_profile_submission_plans_one_gpu_and_the_threads_each_rule_uses(tmp_path):
    """The paper preset through profiles/slurm as it is, with stand-ins for the SLURM commands: the
    stand-in sbatch records its arguments and refuses the job, so nothing runs."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    record = tmp_path / "sbatch_calls.txt"
    for command in CLIENT_COMMANDS:
        script = fake_bin / command
        body = f'printf "%s\\n" "$*" >> {shlex.quote(str(record))}\n' if command == "sbatch" else ""
        script.write_text(f"#!/bin/sh\n{body}echo 'stand-in {command}: no cluster here' >&2\nexit 1\n")
        script.chmod(0o755)
    directory = copy_workflow(tmp_path / "workflow")
    # A ready input makes a training job submittable at once (its data rule is not run).
    ready = directory / "results" / "paper" / "data" / "lung" / "train.npz"
    ready.parent.mkdir(parents=True)
    ready.write_bytes(b"stand-in")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SLURM_", "SNAKEMAKE_SLURM"))}
    env["PATH"] = os.pathsep.join([str(fake_bin), VENV_BIN, env.get("PATH", "")])
    result = subprocess.run(
        [*SNAKEMAKE, "--workflow-profile", "profiles/slurm", "--config", "preset=paper", "--verbose",
         "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
         "results/paper/models/lung/carl/seed0.pt", "results/paper/toy1d/toy1d.csv"],
        cwd=directory, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0, "the stand-in sbatch refuses every job"
    calls = record.read_text().splitlines() if record.exists() else []
    calls = [call.split(" --wrap")[0] for call in calls]  # the options, not the wrapped job command
    train = [c for c in calls if "--comment rule_train_lung_" in c]
    toy = [c for c in calls if "--comment rule_toy1d " in c]
    assert train and toy, result.stdout[-3000:] + result.stderr[-3000:]
    for call in train:
        assert len(_gpu_requests(call)) == 1, f"one GPU request per training job: {call}"
        assert "--cpus-per-task=8" in call.split(), call  # set-threads: train_lung: 8
        assert "-p gpu " in call, call
    for call in toy:
        assert not _gpu_requests(call), call
        assert "--cpus-per-task=1" in call.split(), call  # toy1d runs one thread
        assert "-p cpu " in call, call
