"""A real one-node SLURM cluster in a temporary folder, for the tests (and by hand).

Why a real one: what the study relies on (sbatch through submitit, job arrays, ``afterok``
dependencies, ``scancel --signal``, requeue, squeue's view of pending and running jobs) is SLURM's
behaviour, which a mock would only restate. Debian's ``slurmctld slurmd slurm-client munge``
packages start in seconds on one machine: a munge key and a ``slurm.conf`` written here, munged,
slurmctld and slurmd started as root with everything (sockets, ports, state, logs) under the
folder, so nothing of the machine's own configuration is used or changed. Clients find the
cluster through ``SLURM_CONF`` (see :meth:`SlurmCluster.environ`).

    python tests/slurm_cluster.py start /tmp/slurm   # prints the SLURM_CONF to export
    python tests/slurm_cluster.py stop /tmp/slurm
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "scontrol", "srun")


def missing_programs() -> list[str]:
    """The programs of the Debian packages that are not installed (empty: all are)."""
    return [p for p in DAEMONS + CLIENTS
            if shutil.which(p) is None and not Path("/usr/sbin", p).is_file()]


def skip_reason() -> str | None:
    """Why a cluster cannot be started here, or None."""
    missing = missing_programs()
    if missing:
        return (f"SLURM not installed (missing {', '.join(missing)}): apt-get install slurmctld "
                "slurmd slurm-client munge (.ci/run does)")
    if os.geteuid() != 0:
        return "starting slurmd needs root (SlurmUser=root); run the tests as root, as CI does"
    return None


def _free_ports(count: int) -> list[int]:
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _program(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class SlurmCluster:
    """munged + slurmctld + slurmd for one node (this machine) with every file under ``root``."""

    def __init__(self, root: str | Path, partition: str = "debug"):
        self.root = Path(root).resolve()
        self.partition = partition
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.socket = self.root / "munge" / "munge.socket.2"

    def environ(self) -> dict:
        """What a client process (sbatch, squeue, submitit) needs to reach this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    # -- files ---------------------------------------------------------------------------------
    def write_files(self) -> None:
        munge = self.root / "munge"
        for folder in (munge, self.root / "state", self.root / "spool", self.root / "log"):
            folder.mkdir(parents=True, exist_ok=True)
        munge.chmod(0o700)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        ctld_port, d_port = _free_ports(2)
        cpus = os.cpu_count() or 1
        root = self.root
        self.conf.write_text("\n".join([
            "ClusterName=ckdtest",
            f"SlurmctldHost={self.host}(127.0.0.1)",
            "SlurmUser=root",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={d_port}",
            f"AuthInfo=socket={self.socket}",
            f"StateSaveLocation={root / 'state'}",
            f"SlurmdSpoolDir={root / 'spool'}",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}",
            f"SlurmdPidFile={root / 'slurmd.pid'}",
            f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "SchedulerType=sched/builtin",  # event-driven FIFO: dependencies resolve at once
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "MpiDefault=none",
            "ReturnToService=2",
            "KillWait=5",
            "MinJobAge=600",  # finished jobs stay visible to squeue for the test's duration
            f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.host} Default=YES MaxTime=INFINITE "
            "State=UP",
            "",
        ]))

    # -- daemons -------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> SlurmCluster:
        self.write_files()
        env = {**os.environ, **self.environ()}
        log = self.root / "log"
        subprocess.run([_program("munged"), "--force", f"--socket={self.socket}",
                        f"--key-file={self.root / 'munge' / 'munge.key'}",
                        f"--pid-file={self.root / 'munge' / 'munged.pid'}",
                        f"--seed-file={self.root / 'munge' / 'munged.seed'}",
                        f"--log-file={log / 'munged.log'}"], check=True, env=env)
        subprocess.run([_program("slurmctld"), "-f", str(self.conf), "-i"], check=True, env=env)
        subprocess.run([_program("slurmd"), "-f", str(self.conf), "-N", self.host], check=True,
                       env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(["sinfo", "--noheader", "--format=%T"], env=env,
                                 capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip() in ("idle", "mixed", "allocated"):
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the test cluster did not come up in {timeout:.0f} s; logs in {log}")

    def _pid(self, path: Path) -> int | None:
        try:
            return int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Stop the daemons this cluster started (by their pid files), jobs first."""
        env = {**os.environ, **self.environ()}
        subprocess.run(["scancel", "--full", f"--partition={self.partition}"], env=env,
                       capture_output=True)
        for pid_file in (self.root / "slurmd.pid", self.root / "slurmctld.pid",
                         self.root / "munge" / "munged.pid"):
            pid = self._pid(pid_file)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    action, folder = sys.argv[1], sys.argv[2]
    cluster = SlurmCluster(folder)
    if action == "start":
        cluster.start()
        print(f"export SLURM_CONF={cluster.conf}")
    else:
        cluster.stop()
