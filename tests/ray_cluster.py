"""A two-node Ray cluster on loopback, for the cluster tests and benchmarks.

Two ``ray start --block`` processes (a head and a worker node), each in its own process
group, temp dir and ports (never 10002-19999). Never ``ray stop``: that would stop every
Ray on the machine; :meth:`RayNode.stop` kills only this node's processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

JOIN_S = 300  # how long the second node may take to join


def ray_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "RAY_USAGE_STATS_ENABLED": "0"}


def worker_ports(head: bool) -> range:
    """The ports a node's worker processes take: this test process's own range, the head's
    and the second node's apart (never 10002-19999)."""
    base = 30000 + (os.getpid() * 7 + (0 if head else 211)) % 20000
    return range(base, base + 201)


def free_ports(n: int) -> list[int]:
    """``n`` different free ports outside both nodes' worker ranges: Ray refuses to start a
    node whose ports repeat or fall in its worker range (``ray start`` exits 1), and one
    ``free_port()`` after another can give the same port twice or one in the range."""
    avoid = set(worker_ports(True)) | set(worker_ports(False))
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < n:
            sock = socket.socket()
            held.append(sock)  # held open until all are chosen: no port twice
            sock.bind(("127.0.0.1", 0))
            if (port := sock.getsockname()[1]) not in avoid:
                ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


class RayNode:
    """``ray start --block`` in its own process group, temp dir and ports."""

    def __init__(self, root: Path, name: str, head: str | None, env: dict[str, str],
                 num_cpus: int = 2) -> None:
        self.temp = root / name
        flags = ["--node-manager-port", "--object-manager-port", "--metrics-export-port",
                 "--runtime-env-agent-port", "--dashboard-agent-grpc-port",
                 "--dashboard-agent-listen-port"]
        self.port, dashboard, *ports = free_ports(len(flags) + 2)
        workers = worker_ports(head is None)
        # the head's dashboard port too (its process runs without the UI): another Ray on this
        # machine (a second test worker's) holds the default, 8265
        where = ["--head", "--port", str(self.port), "--include-dashboard=false",
                 "--dashboard-port", str(dashboard)] if head is None else ["--address", head]
        args = [str(Path(sys.executable).parent / "ray"), "start", "--block", *where,
                "--num-cpus", str(num_cpus), "--node-ip-address", "127.0.0.1",
                "--disable-usage-stats", "--temp-dir", str(self.temp),
                "--min-worker-port", str(workers.start), "--max-worker-port",
                str(workers.stop - 1)]
        for flag, port in zip(flags, ports, strict=True):
            args += [flag, str(port)]
        self.proc = subprocess.Popen(args, env=ray_env(env),
                                     stdout=(root / f"{name}.log").open("a"),
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def pids(self, what: str) -> list[int]:
        out = subprocess.run(["pgrep", "-f", f"{what}.*{self.temp}"], capture_output=True,
                             text=True, check=False).stdout
        return [int(p) for p in out.split()]

    @property
    def exit_log(self) -> Path:
        """Where ``ray start --block`` writes which of its processes ended unexpectedly."""
        return self.temp / "session_latest" / "logs" / "ray_process_exit.log"

    def dead(self) -> bool:
        """Whether ``ray start`` or one of the processes it watches has ended."""
        with contextlib.suppress(OSError):
            if self.exit_log.read_text().strip():
                return True
        return self.proc.poll() is not None

    def log_tail(self, lines: int = 15) -> str:
        """The end of this node's ``ray start`` output and of its raylet's logs."""
        code = self.proc.poll()
        out = [f"ray start: {'running' if code is None else f'exit status {code}'}"]
        for log in [self.temp.parent / f"{self.temp.name}.log",
                    *sorted(self.temp.glob("session_latest/logs/raylet.*")), self.exit_log]:
            with contextlib.suppress(OSError):
                text = log.read_text(errors="replace").splitlines()[-lines:]
                out += [f"--- {log.name}", *text]
        return "\n".join(out)

    def stop(self) -> None:
        """Kill this node's process group and every process named after its temp dir."""
        for pid in [self.proc.pid, *self.pids("")]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)


def alive_nodes(address: str, env: dict[str, str]) -> list[str]:
    code = (f"import ray; ray.init(address='{address}', logging_level='ERROR'); "
            "print(' '.join(n['NodeID'] for n in ray.nodes() if n['Alive']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=ray_env(env), timeout=120, check=False).stdout
    return out.split()


def _wait_port(port: int, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the Ray head exited"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the Ray head never listened on port {port}")


@contextlib.contextmanager
def two_nodes(root: Path, env: dict[str, str], num_cpus: int = 2
              ) -> Iterator[tuple[str, RayNode]]:
    """A head and a second node joined to it: (the head's address, the second node)."""
    head = RayNode(root, "ray_head", None, env, num_cpus)
    nodes = [head]
    try:
        _wait_port(head.port, head.proc)
        address = f"127.0.0.1:{head.port}"
        nodes.append(RayNode(root, "ray_worker", address, env, num_cpus))
        deadline, starts = time.monotonic() + JOIN_S, 1
        while len(alive_nodes(address, env)) < 2:
            assert time.monotonic() < deadline, \
                f"the second Ray node never joined:\n{nodes[1].log_tail()}\n{head.log_tail()}"
            if nodes[1].dead():  # e.g. a port another process took since it was chosen
                assert starts < 3, \
                    f"the second Ray node died on all {starts} starts:\n{nodes[1].log_tail()}"
                nodes[1].stop()
                nodes[1] = RayNode(root, f"ray_worker{starts}", address, env, num_cpus)
                starts += 1
            time.sleep(1)
        yield address, nodes[1]
    finally:
        for node in reversed(nodes):
            node.stop()
