"""A single-node SLURM cluster with accounting, in a temporary directory, for the tests.

munged (its own key and socket), MariaDB (its own data dir and port), slurmdbd, slurmctld
and slurmd, all on 127.0.0.1 on free ports, configured by files in the directory and the
``SLURM_CONF`` variable: nothing in ``/etc`` is read or written. Pitfalls met on the way:
munged wants its socket folder mode 0711; without cgroups the node needs
``ProctrackType=proctrack/linuxproc`` and ``TaskPlugin=task/none``; a ``RealMemory`` so
``--mem`` requests are checked; ``AccountingStoragePass=<munge socket>`` so ``sacct`` talks
to slurmdbd through this munged.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from al_sim.tracking.mlflow_server import free_port

BINARIES = ("munged", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd",
            "sbatch", "sacct", "squeue", "scancel")
REQUEUE_WAIT_S = 30  # AuthInfo cred_expire: also how long a requeued job waits (default 120)
NODE_CPUS, NODE_MEMORY_MB = 4, 4000  # CPUs may exceed the machine's: SlurmdParameters


def missing() -> str | None:
    """The first binary not on PATH (or in /usr/sbin), else None."""
    for tool in BINARIES:
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return tool
    return None


def _bin(tool: str) -> str:
    return shutil.which(tool) or f"/usr/sbin/{tool}"


def _wait(check, what: str, timeout_s: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    tail = log.read_text()[-2000:] if log is not None and log.exists() else ""
    raise RuntimeError(f"{what} not up within {timeout_s:.0f} s\n{tail}")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class SlurmCluster:
    """Start with :meth:`start`, stop with :meth:`stop` (kills every daemon it started)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen] = []
        self.node = socket.gethostname()
        self.env: dict[str, str] = {}

    # ---------------------------------------------------------------- daemons
    def _spawn(self, args: list[str], name: str) -> subprocess.Popen:
        log = (self.root / f"{name}.out").open("ab")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **self.env}, start_new_session=True)
        self.procs.append(proc)
        return proc

    def _munge(self) -> None:
        folder = self.root / "munge"
        folder.mkdir(mode=0o711)
        folder.chmod(0o711)  # munged refuses a socket folder others may write
        key = folder / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.munge_socket = folder / "munge.sock"
        self._spawn([_bin("munged"), "-F", "--force", f"--socket={self.munge_socket}",
                     f"--key-file={key}", f"--pid-file={folder / 'munged.pid'}",
                     f"--log-file={folder / 'munged.log'}",
                     f"--seed-file={folder / 'munged.seed'}"], "munged")
        _wait(self.munge_socket.exists, "munged", 30, folder / "munged.log")

    def _mariadb(self) -> None:
        data = self.root / "mysql"
        subprocess.run([_bin("mariadb-install-db"), "--no-defaults", f"--datadir={data}",
                        "--user=root", "--auth-root-authentication-method=normal",
                        "--skip-test-db"], check=True, capture_output=True, timeout=300)
        self.db_port = free_port()
        self._spawn([_bin("mariadbd"), "--no-defaults", f"--datadir={data}", "--user=root",
                     f"--socket={self.root / 'mysql.sock'}", f"--port={self.db_port}",
                     "--bind-address=127.0.0.1", f"--pid-file={self.root / 'mysql.pid'}",
                     "--skip-log-bin", "--innodb-buffer-pool-size=32M"], "mariadbd")
        _wait(lambda: _listening(self.db_port), "mariadbd", 120, self.root / "mariadbd.out")

    def _configs(self) -> None:
        r = self.root
        for sub in ("state", "spool", "log"):
            (r / sub).mkdir()
        self.dbd_port, self.ctld_port, self.slurmd_port = (free_port() for _ in range(3))
        auth = f"AuthType=auth/munge\nAuthInfo=socket={self.munge_socket}\n"
        dbd = r / "slurmdbd.conf"
        dbd.write_text(
            f"{auth}DbdHost=localhost\nDbdAddr=127.0.0.1\nDbdPort={self.dbd_port}\n"
            "SlurmUser=root\nStorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\n"
            f"StoragePort={self.db_port}\nStorageUser=root\nStorageLoc=slurm_acct_db\n"
            f"PidFile={r / 'slurmdbd.pid'}\nLogFile={r / 'log' / 'slurmdbd.log'}\n")
        dbd.chmod(0o600)
        self.conf = r / "slurm.conf"
        self.conf.write_text(
            f"ClusterName=alsim\nSlurmctldHost={self.node}(127.0.0.1)\n"
            f"{auth.rstrip()},cred_expire={REQUEUE_WAIT_S}\n"
            f"SlurmctldPort={self.ctld_port}\nSlurmdPort={self.slurmd_port}\n"
            "SlurmUser=root\nSlurmdUser=root\n"
            f"StateSaveLocation={r / 'state'}\nSlurmdSpoolDir={r / 'spool'}\n"
            f"SlurmctldPidFile={r / 'slurmctld.pid'}\nSlurmdPidFile={r / 'slurmd.pid'}\n"
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}\n"
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}\n"
            "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n"
            "JobAcctGatherType=jobacct_gather/none\nMpiDefault=none\n"
            "SchedulerType=sched/backfill\nSelectType=select/cons_tres\n"
            "SelectTypeParameters=CR_Core_Memory\nReturnToService=2\nJobRequeue=1\n"
            "KillWait=5\nMinJobAge=300\nSlurmctldTimeout=30\nSlurmdTimeout=30\n"
            "SlurmdParameters=config_overrides\n"
            "AccountingStorageType=accounting_storage/slurmdbd\n"
            f"AccountingStorageHost=localhost\nAccountingStoragePort={self.dbd_port}\n"
            f"AccountingStoragePass={self.munge_socket}\n"
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} "
            f"RealMemory={NODE_MEMORY_MB} State=UNKNOWN\n"
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n")
        self.env = {"SLURM_CONF": str(self.conf)}

    def start(self) -> None:
        """Bring every daemon up and wait until the node takes jobs."""
        self._munge()
        self._mariadb()
        self._configs()
        self._spawn([_bin("slurmdbd"), "-D"], "slurmdbd")  # reads SLURM_CONF's folder
        _wait(lambda: _listening(self.dbd_port), "slurmdbd", 120,
              self.root / "log" / "slurmdbd.log")
        self._spawn([_bin("slurmctld"), "-D", "-i", "-f", str(self.conf)], "slurmctld")
        _wait(lambda: _listening(self.ctld_port), "slurmctld", 120,
              self.root / "log" / "slurmctld.log")
        self._spawn([_bin("slurmd"), "-D", "-N", self.node, "-f", str(self.conf)], "slurmd")
        _wait(self._idle, "slurmd", 120, self.root / "log" / "slurmd.log")

    def _idle(self) -> bool:
        out = self.run(["sinfo", "-h", "-o", "%t"], check=False).stdout
        return out.strip() in ("idle", "mix", "alloc")

    def run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        """A SLURM command on this cluster."""
        return subprocess.run(args, env={**os.environ, **self.env}, capture_output=True,
                              text=True, timeout=60, check=check)

    def stop(self) -> None:
        """Cancel every job, then SIGTERM and SIGKILL each daemon's process group."""
        with contextlib.suppress(Exception):
            self.run(["scancel", "--user", "root", "--full"], check=False)
        for proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
