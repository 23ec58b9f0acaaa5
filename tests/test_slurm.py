"""The SLURM profile: what it asks sbatch for (checked against stand-in SLURM commands), and a run
through a real single-node SLURM (munge + slurmctld + slurmd started here) whose results match a
local run byte for byte."""

import os
import shlex
import shutil
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
    return [arg for arg in shlex.split(call) if arg.startswith(("--gpus", "--gres=gpu"))]


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
    # Ready inputs make the training jobs submittable at once (their data rules are not run).
    for ready in ("lung/train.npz", "lung/val.npz", "retina/train_none.npz", "retina/val_none.npz"):
        path = directory / "results" / "paper" / "data" / ready
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"stand-in")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SLURM_", "SNAKEMAKE_SLURM"))}
    env["PATH"] = os.pathsep.join([str(fake_bin), VENV_BIN, env.get("PATH", "")])
    result = subprocess.run(
        [*SNAKEMAKE, "--workflow-profile", "profiles/slurm", "--config", "preset=paper", "--keep-going",
         "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
         "results/paper/models/lung/carl/seed0.pt", "results/paper/models/retina/carl/none/seed0.pt",
         "results/paper/toy1d/toy1d.csv"],
        cwd=directory, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0, "the stand-in sbatch refuses every job"
    calls = record.read_text().splitlines() if record.exists() else []
    calls = [call.split(" --wrap")[0] for call in calls]  # the options, not the wrapped job command
    train = [c for c in calls if "--comment rule_train_" in c]
    toy = [c for c in calls if "--comment rule_toy1d " in c]
    submitted = {call.split("--comment rule_")[1].split("_wildcards")[0] for call in train}
    assert submitted == {"train_lung", "train_retina"} and toy, result.stdout[-3000:] + result.stderr[-3000:]
    for call in train:
        assert len(_gpu_requests(call)) == 1, f"one GPU request per training job: {call}"
        assert "--cpus-per-task=8" in call.split(), call  # set-threads: train_*: 8
        assert "-p gpu " in call, call
    for call in toy:
        assert not _gpu_requests(call), call
        assert "--cpus-per-task=1" in call.split(), call  # toy1d runs one thread
        assert "-p cpu " in call, call


# --- a real single-node SLURM --------------------------------------------------------------------
# The lung chain of the smoke preset: its three data rules, one training (a GPU rule), one evaluation.
# The whole smoke preset through SLURM is too slow for CI: a trial run had done 17 of its 56 jobs
# after 6 minutes on a 2-core machine (every job starts Snakemake twice, the plugin's status polls
# back off, the one GPU serialises the ten trainings). These five jobs take about a minute and
# cover both kinds of job the profile sets apart (GPU training, CPU rules).
LUNG_CHAIN = ["results/smoke/lung/gradicon/seed0.csv", "results/smoke/lung/gradicon/seed0_examples.npz"]
LUNG_CHAIN_OUTPUTS = [*LUNG_CHAIN, "results/smoke/data/lung/train.npz", "results/smoke/data/lung/val.npz",
                      "results/smoke/data/lung/test.npz", "results/smoke/models/lung/gradicon/seed0.pt",
                      "results/smoke/curves/lung/gradicon/seed0.csv"]
LUNG_CHAIN_RULES = {"lung_data": 3, "train_lung": 1, "evaluate_lung": 1}
# The nested `srun` that runs each job inside its allocation drops SLURM_CONF from its environment
# (snakemake-executor-plugin-slurm-jobstep keeps only job-identity SLURM_* variables), so it finds
# the configuration by the standard lookup: /etc/slurm/slurm.conf, then the copy a "configless"
# slurmd keeps under /run/slurm/conf. We run slurmd configless (it fetches our slurm.conf from
# slurmctld) and never write to /etc; a configuration already there would take precedence.
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
CONFIGLESS_CONF = Path("/run/slurm/conf")
MUNGE_PID = Path("/run/munge/munged.pid")


def _run(command, timeout=60, **kwargs):
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _install_slurm() -> None:
    """Install the SLURM and munge packages if any of their programs is missing; skip if we can't."""
    if all(os.path.exists(path) for path in SLURM_BINARIES):
        return
    if os.geteuid() != 0:
        pytest.skip("SLURM is not installed, and installing it needs root")
    if not os.path.exists("/usr/bin/apt-get"):
        pytest.skip("SLURM is not installed, and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *SLURM_PACKAGES]
    try:
        result = _run(install, timeout=600, env=env)
        if result.returncode != 0:  # no or stale package lists: fetch them once, then try again
            _run(["apt-get", "update", "-q"], timeout=300, env=env)
            result = _run(install, timeout=600, env=env)
    except subprocess.TimeoutExpired as error:
        pytest.skip(f"installing SLURM timed out: {' '.join(error.cmd)}")
    missing = [path for path in SLURM_BINARIES if not os.path.exists(path)]
    if result.returncode != 0 or missing:
        pytest.skip(f"installing SLURM failed (missing {missing}): {_tail(result.stdout + result.stderr, 5)}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def _slurm_conf(state: Path, host: str, hardware: str, ctld_port: int) -> str:
    """A one-node cluster of this machine, private to the test: its own ports, state, logs and pid
    files under ``state``; no accounting (so sacct does not work: the run uses squeue)."""
    return "\n".join([
        "ClusterName=equireg-test",
        f"SlurmctldHost={host}",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={_free_port()}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"StateSaveLocation={state}/ctld",
        f"SlurmdSpoolDir={state}/d",
        f"SlurmctldPidFile={state}/slurmctld.pid",
        f"SlurmdPidFile={state}/slurmd.pid",
        f"SlurmctldLogFile={state}/slurmctld.log",
        f"SlurmdLogFile={state}/slurmd.log",
        # slurmd serves the configuration to the jobs' nested srun (see CONFIGLESS_CONF)
        "SlurmctldParameters=enable_configless",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "MpiDefault=none",
        "ReturnToService=2",
        # squeue sees a finished job for MinJobAge seconds; the plugin wants >= 3 x its first wait
        "MinJobAge=3600",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=30",
        "GresTypes=gpu",
        # `hardware` is what `slurmd -C` measures (CPUs, sockets, cores, RealMemory), so the node
        # registers as configured. One stand-in GPU (gres.conf) lets the training jobs' real GPU
        # request be scheduled; the scripts still pick the CPU, as torch sees no CUDA device.
        f"NodeName={host} {hardware} Gres=gpu:1 State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop(pid_files: list[Path]) -> None:
    """Stop the daemons whose pids ``pid_files`` hold: SIGTERM to all (each takes a few seconds to
    shut down), then SIGKILL to any still alive after 10 s."""
    pids = []
    for pid_file in pid_files:
        try:
            pids.append(int(pid_file.read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            continue
    pids = [pid for pid in pids if _alive(pid)]
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while any(map(_alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in filter(_alive, pids):
        os.kill(pid, signal.SIGKILL)


def _cancel_all_jobs(env: dict) -> None:
    """Cancel whatever a failed or killed run left on our private cluster."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            jobs = _run(["squeue", "-h", "-o", "%i"], timeout=10, env=env).stdout.split()
            if not jobs:
                return
            _run(["scancel", *jobs], timeout=10, env=env)
        except subprocess.TimeoutExpired:
            return
        time.sleep(1)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """munge + slurmctld + slurmd on this machine; yields the environment for SLURM clients
    (SLURM_CONF) and stops the daemons it started afterwards, whatever happened."""
    _install_slurm()
    if os.geteuid() != 0:
        pytest.skip("starting slurmctld and slurmd needs root")
    for path, why in ((SYSTEM_CONF, "a SLURM configuration"), (CONFIGLESS_CONF, "a configless slurmd's configuration")):
        if path.exists() or path.is_symlink():
            pytest.skip(f"{path} exists ({why} of this machine, or left by a killed run of this test: remove "
                        "it if no slurmd runs): the jobs' nested srun would read it, not ours")
    state = tmp_path_factory.mktemp("slurm")
    for name in ("ctld", "d"):
        (state / name).mkdir()
    host = socket.gethostname().split(".")[0]  # `hostname -s`
    try:
        measured = _run(["/usr/sbin/slurmd", "-C"], timeout=30).stdout.splitlines()[0].split()
    except (subprocess.TimeoutExpired, IndexError):
        pytest.skip("`slurmd -C` did not describe this machine")
    hardware = " ".join(field for field in measured if not field.startswith("NodeName="))
    conf = state / "slurm.conf"
    ctld_port = _free_port()
    conf.write_text(_slurm_conf(state, host, hardware, ctld_port))
    # A GPU needs a device file; /dev/null stands in (slurmd only checks that it exists).
    (state / "gres.conf").write_text("AutoDetect=off\nName=gpu File=/dev/null\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SLURM_", "SNAKEMAKE_SLURM"))}
    daemon_env = dict(env)
    env["SLURM_CONF"] = str(conf)
    env["PATH"] = os.pathsep.join([VENV_BIN, env.get("PATH", "")])

    stops = []  # pid files of the daemons started here

    def stop_all():
        _cancel_all_jobs(env)
        _stop(stops)
        if CONFIGLESS_CONF.is_symlink() and str(os.readlink(CONFIGLESS_CONF)).startswith(str(state)):
            CONFIGLESS_CONF.unlink()

    def give_up(why: str):
        logs = "".join(f"\n--- {log.name}\n{_tail(log.read_text(errors='replace'), 8)}"
                       for log in sorted(state.glob("*.log")))
        pytest.skip(f"starting SLURM failed: {why}{logs}")

    try:
        if _run(["munge", "-n"], timeout=10).returncode != 0:  # no munged answering yet: start ours
            MUNGE_PID.parent.mkdir(exist_ok=True)
            shutil.chown(MUNGE_PID.parent, "munge", "munge")
            # --force: a socket left by a dead munged must not stop this one
            started = _run(["/usr/sbin/munged", "--force"], timeout=30, user="munge", group="munge")
            if started.returncode != 0:
                give_up(f"munged: {_tail(started.stderr, 5)}")
            stops.append(MUNGE_PID)
        for daemon, environment in ((["/usr/sbin/slurmctld"], env),
                                    (["/usr/sbin/slurmd", "--conf-server", f"{host}:{ctld_port}"], daemon_env)):
            started = _run(daemon, timeout=30, env=environment)
            stops.append(state / f"{Path(daemon[0]).name}.pid")
            if started.returncode != 0:
                give_up(f"{daemon[0]}: {_tail(started.stderr, 5)}")
        deadline = time.monotonic() + 30
        while True:
            states = _run(["sinfo", "-h", "-N", "-o", "%T"], timeout=10, env=env).stdout.split()
            if states == ["idle"]:
                break
            if any(s.startswith(("inval", "drain")) for s in states):  # slurmctld refused the node
                give_up(f"the node is {states[0]}, see slurmctld.log")
            if time.monotonic() > deadline:
                give_up(f"the node is {states or 'unknown'} after 30 s, not idle")
            time.sleep(0.5)
    except subprocess.TimeoutExpired as error:
        stop_all()
        give_up(f"{' '.join(map(str, error.cmd))} timed out")
    except BaseException:  # a skip above, or anything unexpected: no daemon outlives the fixture
        stop_all()
        raise
    try:
        yield env
    finally:
        stop_all()


def _snakemake_killed_after(timeout: int, args: list[str], cwd: Path, env: dict, log: Path) -> int:
    """Run Snakemake in its own process group; past ``timeout`` the whole group is killed (the
    plugin can wait forever on a job it never sees finish, and SIGTERM does not stop it)."""
    with log.open("w") as out:
        process = subprocess.Popen([*SNAKEMAKE, *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            pytest.fail(f"snakemake did not finish within {timeout} s:\n{_tail(log.read_text(), 40)}")


@pytest.mark.slow
def test_workflow_runs_through_slurm_as_it_runs_locally(tmp_path, slurm_cluster):
    env = slurm_cluster
    cluster = copy_workflow(tmp_path / "slurm")
    started = time.monotonic()
    returncode = _snakemake_killed_after(600, [
        "--workflow-profile", "profiles/slurm", *LUNG_CHAIN,
        # what this one-node cluster has, instead of the site's partitions and memory (on the
        # command line each mapping replaces the profile's whole one)
        "--default-resources", "mem_mb=2000", "runtime=30",
        "--set-resources", "train_lung:mem_mb=2000",
        # the local run's thread count, so that results compare byte for byte (and the node has
        # fewer CPUs than the profile's 8)
        "--set-threads", "train_lung=1",
        # no accounting here: sacct cannot answer (see profiles/slurm/config.yaml)
        "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
        "--slurm-keep-successful-logs", "--verbose",
        "--config", "preset=smoke"], cluster, env, tmp_path / "slurm.log")
    log = (tmp_path / "slurm.log").read_text()
    assert returncode == 0, _tail(log, 60)
    print(f"through SLURM: {time.monotonic() - started:.0f} s")

    # every job was an sbatch job that SLURM ran to completion, the training one with its one GPU
    job_logs = sorted((cluster / ".snakemake" / "slurm_logs").rglob("*.log"))
    rules = [path.relative_to(cluster / ".snakemake" / "slurm_logs").parts[0].removeprefix("rule_")
             for path in job_logs]
    assert {rule: rules.count(rule) for rule in set(rules)} == LUNG_CHAIN_RULES, job_logs
    for job_log in job_logs:
        job = _run(["scontrol", "show", "job", job_log.stem], timeout=10, env=env).stdout
        assert "JobState=COMPLETED" in job, job
    submissions = [line.split("sbatch call: ", 1)[1].split(" --wrap")[0]
                   for line in log.splitlines() if "sbatch call: " in line]
    assert len(submissions) == len(job_logs), submissions
    for call in submissions:
        assert _gpu_requests(call) == (["--gpus=1"] if "rule_train_lung_" in call else []), call

    local = copy_workflow(tmp_path / "local")
    result = subprocess.run([*SNAKEMAKE, "--cores", "2", *LUNG_CHAIN, "--config", "preset=smoke"], cwd=local,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, _tail(result.stdout + result.stderr, 60)
    for output in LUNG_CHAIN_OUTPUTS:
        assert (cluster / output).read_bytes() == (local / output).read_bytes(), output
