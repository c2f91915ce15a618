"""Bring up (and tear down) a real single-node SLURM cluster for the scale-out tests.

Needs root and Debian's ``slurmctld slurmd slurm-client munge`` packages (``.ci/run``
installs them). There is no systemd here: ``munged`` is started as the munge user,
``slurmctld -c`` and ``slurmd`` daemonize themselves (never background them with ``&``:
that would hold the test runner's output pipe), and every daemon we started is stopped by
the PID it recorded, never by name.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo")
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")


class ClusterUnavailable(RuntimeError):
    """SLURM cannot be started here; the message says why."""


@dataclass
class Cluster:
    """A running single-node cluster: its config file and the daemons we started."""

    root: Path
    conf: Path
    pids: dict[str, int] = field(default_factory=dict)

    def stop(self) -> None:
        """Stop the daemons this cluster started, by PID, and wait for them to go."""
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.pop(name, None)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(50):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)

    def logs(self) -> str:
        """The daemons' logs, for an error message."""
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name}\n" + path.read_text()[-3000:])
        return "\n".join(parts)


def _why_not() -> str | None:
    missing = [
        b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()
    ]
    if missing:
        return (
            f"SLURM is not installed ({', '.join(missing)} missing); "
            "run .ci/run, or apt-get install slurmctld slurmd slurm-client munge as root"
        )
    if os.geteuid() != 0:
        return "starting slurmctld/slurmd/munged needs root"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "the munge user does not exist (is the munge package installed?)"
    return None


def _read_pid(path: Path, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return int(path.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            time.sleep(0.05)
    raise ClusterUnavailable(f"{path}: daemon wrote no PID file in {timeout:.0f} s")


def _start_munge(cluster: Cluster) -> None:
    if MUNGE_SOCKET.exists():
        probe = subprocess.run(["munge", "-n"], capture_output=True)
        if probe.returncode == 0:
            return  # a munged is already serving; use it and leave it alone
    munge = pwd.getpwnam("munge")
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_bytes(os.urandom(1024))
    os.chown(key, munge.pw_uid, munge.pw_gid)
    key.chmod(0o400)
    for folder in (Path("/run/munge"), Path("/var/lib/munge"), Path("/var/log/munge")):
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, munge.pw_uid, munge.pw_gid)
    pidfile = Path("/run/munge/munged.pid")
    pidfile.unlink(missing_ok=True)
    subprocess.run(
        ["runuser", "-u", "munge", "--", "munged", "--force"],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cluster.pids["munged"] = _read_pid(pidfile)


def _write_conf(cluster: Cluster, host: str) -> None:
    cpus = os.cpu_count() or 1
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    spool = cluster.root / "spool"
    state = cluster.root / "state"
    for folder in (spool, state):
        folder.mkdir(parents=True, exist_ok=True)
    cluster.conf.write_text(
        f"""\
ClusterName=heatmaptest
SlurmctldHost={host}
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile={cluster.root}/slurmctld.pid
SlurmdPidFile={cluster.root}/slurmd.pid
SlurmctldLogFile={cluster.root}/slurmctld.log
SlurmdLogFile={cluster.root}/slurmd.log
SlurmdSpoolDir={spool}
StateSaveLocation={state}
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
DependencyParameters=kill_invalid_depend
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
InactiveLimit=0
KillWait=5
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={host} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
    )


def start_cluster(root: Path, timeout: float = 60.0) -> Cluster:
    """Start munged (if none is serving), slurmctld and slurmd; wait for an idle node.

    Sets ``SLURM_CONF`` (and ``LOGNAME``, which Nipype's SLURM plugin needs) in this
    process's environment, so that sbatch/squeue and Nipype find the cluster.

    Raises
    ------
    ClusterUnavailable
        If SLURM is not installed, we are not root, or the node does not come up.
    """
    reason = _why_not()
    if reason:
        raise ClusterUnavailable(reason)
    host = socket.gethostname().split(".")[0]
    try:
        socket.gethostbyname(host)
    except OSError as err:
        raise ClusterUnavailable(f"host name {host!r} does not resolve ({err})") from err
    cluster = Cluster(root=root, conf=root / "slurm.conf")
    root.mkdir(parents=True, exist_ok=True)
    _write_conf(cluster, host)
    os.environ["SLURM_CONF"] = str(cluster.conf)
    os.environ.setdefault("LOGNAME", pwd.getpwuid(os.geteuid()).pw_name)
    quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    try:
        _start_munge(cluster)
        subprocess.run(["slurmctld", "-c", "-f", str(cluster.conf)], check=True, **quiet)
        cluster.pids["slurmctld"] = _read_pid(root / "slurmctld.pid")
        subprocess.run(["slurmd", "-f", str(cluster.conf)], check=True, **quiet)
        cluster.pids["slurmd"] = _read_pid(root / "slurmd.pid")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = subprocess.run(
                ["sinfo", "-h", "-n", host, "-o", "%T"], capture_output=True, text=True
            ).stdout.strip()
            if state.startswith("idle"):
                return cluster
            time.sleep(0.2)
        raise ClusterUnavailable(f"node {host} not idle after {timeout:.0f} s (state {state!r})")
    except (subprocess.CalledProcessError, ClusterUnavailable, OSError) as err:
        logs = cluster.logs()
        cluster.stop()
        raise ClusterUnavailable(f"SLURM did not start: {err}\n{logs}") from err
