"""The shipped SLURM profile (slurm/config.yaml) on a real one-node SLURM cluster on loopback.

The module fixture installs Debian's slurm-wlm and munge when they are missing (apt-get, as root, as on CI),
writes /etc/slurm/slurm.conf (state and logs in a temporary folder; the node line from `slurmd -C`), starts
munged, slurmctld and slurmd by hand (no systemd), and stops exactly the daemons it started, by PID. An
existing /etc/slurm/slurm.conf is put back afterwards.

A tiny config (sklearn digits, ResNet-18, one epoch on 64 images, one cut-off, PGD-2 on 32 images, no GPU)
then runs through `snakemake --profile slurm` in a copy of the repository, with the test-only overrides a
one-node cluster without accounting needs (`--slurm-no-account --slurm-status-command squeue`, partition
`debug`). The training and evaluation jobs must have run as SLURM jobs and the figure must exist.

Skips only where it cannot be root, or neither SLURM nor apt-get is available.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import TINY as TINY_CONFIG, copy_repo

pytestmark = pytest.mark.slow

SLURM_CONF = Path("/etc/slurm/slurm.conf")
DAEMONS = ("/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd")

# The tests' tiny config (tests/tiny.yaml), made to fit a 2-CPU SLURM node: small memory requests so that two
# jobs run side by side, no GPU, and each pretrained net's cells in one retraining job.
TINY = yaml.safe_load(TINY_CONFIG.read_text())
TINY["datasets"]["digits"]["resources"] = {stage: {"runtime": 15, "mem_mb": 1500}
                                           for stage in ("pretrain", "retrain", "evaluate")}
TINY["resources"] = {"threads": 1, "gpu": 0}
TINY["grouping"] = {"jobs_per_net": 1}
# prepare_data asks for 8 GB in the rule; one CPU-only node may have less
TEST_OVERRIDES = (
    "--slurm-no-account",
    "--slurm-status-command", "squeue",
    "--slurm-init-seconds-before-status-checks", "3",
    "--default-resources", "slurm_partition=debug",
    "--set-resources", "prepare_data:mem_mb=1500",
    "--slurm-keep-successful-logs",
)
SLURM_RULES = {"prepare_data": 1, "pretrain": 2, "retrain": 2, "evaluate": 2}  # evaluate: each net with its group

SLURM_CONF_TEMPLATE = """\
# Written by tests/test_slurm.py (a one-node test cluster on loopback); removed after the test.
ClusterName=advlayers-test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation={tmp}/state
SlurmdSpoolDir={tmp}/spool
SlurmctldPidFile={tmp}/slurmctld.pid
SlurmdPidFile={tmp}/slurmd.pid
SlurmctldLogFile={tmp}/log/slurmctld.log
SlurmdLogFile={tmp}/log/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={tmp}/log/jobcomp.txt
MinJobAge=600
DefMemPerCPU=1500
{node}
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def _run(cmd, timeout=60, check=True, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _ensure_installed():
    """slurm-wlm and munge from Debian, when missing. Returns a reason to skip, or None."""
    if all(Path(d).exists() for d in DAEMONS) and shutil.which("sbatch"):
        return None
    if not shutil.which("apt-get"):
        return "SLURM is not installed and apt-get is not available to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        _run(["apt-get", "update", "-qq"], timeout=300, env=env)
        _run(["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"], timeout=600, env=env)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        return f"could not install slurm-wlm and munge with apt-get: {str(e)[-500:]}"
    missing = [d for d in DAEMONS if not Path(d).exists()]
    return f"apt-get installed slurm-wlm/munge but {missing} are missing" if missing else None


def _port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _munge_works():
    try:
        cred = _run(["munge", "-n"], timeout=10, check=False)
        return cred.returncode == 0 and _run(["unmunge"], input=cred.stdout, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _node_line():
    """The node's real CPUs/memory (`slurmd -C`) as a loopback node named localhost."""
    out = _run(["/usr/sbin/slurmd", "-C"], timeout=30).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("NodeName="))
    fields = dict(f.split("=", 1) for f in line.split())
    fields["NodeName"] = "localhost"
    fields["RealMemory"] = str(max(1000, int(fields["RealMemory"]) - 512))  # headroom for the OS
    fields.pop("UpTime", None)
    return " ".join(f"{k}={v}" for k, v in fields.items()) + " NodeAddr=127.0.0.1 State=UNKNOWN"


def _read_pid(path: Path, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            time.sleep(0.2)
    raise RuntimeError(f"no PID in {path} after {timeout}s")


def _stop(pid, name):
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _logs(tmp):
    text = ""
    for name in ("slurmctld.log", "slurmd.log"):
        p = tmp / "log" / name
        if p.exists():
            text += f"\n--- {p} (tail)\n" + "\n".join(p.read_text(errors="replace").splitlines()[-30:])
    return text


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A running one-node SLURM (partition `debug`); yields its state/log folder."""
    if os.geteuid() != 0:
        pytest.skip("the real-SLURM test needs root (it installs SLURM and starts its daemons)")
    reason = _ensure_installed()
    if reason:
        pytest.skip(reason)
    if _port_open(6817) or _port_open(6818):
        pytest.skip("a SLURM daemon already listens on port 6817/6818: not starting a second cluster")

    tmp = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool", "log"):
        (tmp / sub).mkdir()
    backup = SLURM_CONF.read_bytes() if SLURM_CONF.exists() else None
    started: list[tuple[int, str]] = []
    try:
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SLURM_CONF.write_text(SLURM_CONF_TEMPLATE.format(tmp=tmp, node=_node_line()))

        if not _munge_works():
            run_munge = Path("/run/munge")
            run_munge.mkdir(parents=True, exist_ok=True)
            shutil.chown(run_munge, "munge", "munge")
            pidfile = run_munge / "munged.pid"
            pidfile.unlink(missing_ok=True)
            _run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], timeout=30)
            started.append((_read_pid(pidfile), "munged"))
            assert _munge_works(), "munged started but munge -n | unmunge fails"

        _run(["/usr/sbin/slurmctld"], timeout=60)
        started.append((_read_pid(tmp / "slurmctld.pid"), "slurmctld"))
        _run(["/usr/sbin/slurmd", "-N", "localhost"], timeout=60)
        started.append((_read_pid(tmp / "slurmd.pid"), "slurmd"))

        deadline = time.monotonic() + 60
        state = ""
        while time.monotonic() < deadline:
            state = _run(["sinfo", "-h", "-n", "localhost", "-o", "%t"], check=False).stdout.strip()
            if state == "idle":
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"the node did not become idle (sinfo: {state!r}){_logs(tmp)}")
        yield tmp
    finally:
        for pid, name in reversed(started):
            _stop(pid, name)
        if backup is not None:
            SLURM_CONF.write_bytes(backup)
        else:
            SLURM_CONF.unlink(missing_ok=True)


def _copy_repo(dst: Path) -> Path:
    root = copy_repo(dst)  # copies slurm/ too (tools.sources.WORKFLOW_FILES)
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))
    return root


def test_profile_runs_the_workflow_as_slurm_jobs(slurm_cluster, tmp_path):
    root = _copy_repo(tmp_path / "repo")
    # the jobs run `python -m snakemake` with this interpreter (sbatch --export=ALL); make it the first python
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [sys.executable, "-m", "snakemake", "--profile", "slurm", "all_figures", *TEST_OVERRIDES,
           "--configfile", "tiny.yaml"]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=420)
    except subprocess.TimeoutExpired as e:
        squeue = _run(["squeue", "--states=all"], check=False).stdout
        pytest.fail(f"snakemake --profile slurm did not finish in 420 s\nsqueue:\n{squeue}\n"
                    f"{(e.stdout or '')[-3000:]}{(e.stderr or '')[-3000:]}{_logs(slurm_cluster)}")
    out = proc.stdout + proc.stderr
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, f"snakemake --profile slurm failed ({proc.returncode}):\n{out[-6000:]}" + _logs(
        slurm_cluster)

    # every training/evaluation job was submitted to SLURM: "Job N has been submitted with SLURM jobid M"
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", out)
    assert len(submitted) == sum(SLURM_RULES.values()), f"SLURM job ids in the log: {submitted}\n{out[-4000:]}"
    # ... and SLURM knows them, completed (MinJobAge keeps them visible to squeue/scontrol)
    for jobid in submitted:
        info = _run(["scontrol", "show", "job", jobid]).stdout
        assert "JobState=COMPLETED" in info, info
        assert "Partition=debug" in info, info
    # the SLURM-side logs name the rules that ran there (--slurm-keep-successful-logs)
    logdir = root / ".snakemake" / "slurm_logs"
    slurm_logs = [p.relative_to(logdir) for p in logdir.rglob("*.log")]
    ran = {rule: sum(1 for p in slurm_logs if p.parts[0] == f"rule_{rule}") for rule in SLURM_RULES}
    assert ran == SLURM_RULES, (ran, [str(p) for p in slurm_logs])
    # the light rules ran locally (localrules), not through SLURM
    assert "localrule figure:" in out and "localrule table:" in out and "localrule claims:" in out, out[-3000:]

    for ext in ("png", "pdf"):
        fig = root / "results" / "figures" / f"cutoff_digits.{ext}"
        assert fig.is_file() and fig.stat().st_size > 1000, fig
    print(f"\n{len(submitted)} SLURM jobs ({', '.join(submitted)}) in {elapsed:.0f} s")
