"""A sweep's launcher workers forked from a pristine copy of their launcher: a zygote.

joblib's loky workers and submitit's local job controllers are real interpreters that pay
5-7 s of imports each; a sweep forked from the fork server already holds those libraries. A
worker cannot fork from the launcher itself (it has opened the MLflow store, set Hydra's
globals, started threads), so the launcher forks a zygote first, before it runs anything, and
each worker forks from that copy. The worker must still be the launcher's child (loky and
submitit wait on it, the launcher watch reads ``getppid``): the zygote forks an intermediate
that forks the worker and exits, and the launcher, a child subreaper, adopts the orphan. The
worker gets exactly the launcher's file descriptors that the command names (sent over a unix
socket), its environment, folder and argv, and starts as a new interpreter would (see
tests/fork_nested.py). The thread limits joblib gives its workers (``OMP_NUM_THREADS``...) are
read when a library loads, so the worker sets them with torch and threadpoolctl instead; any
other difference in what libraries read at load time gets a real interpreter.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

LOKY = "joblib.externals.loky.backend.popen_loky_posix"
MODULES = (LOKY, "submitit.local._local")  # the workers a launcher starts
THREAD_LIMITS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                 "NUMEXPR_NUM_THREADS")  # what joblib sets for its workers (and loads read)
PR_SET_CHILD_SUBREAPER = 36
_ZYGOTE: Zygote | None = None


class Zygote:
    """A fork of this process made before it ran anything; it forks workers on request."""

    def __init__(self, become: Callable[..., None]) -> None:
        self.owner = os.getpid()
        self._lock = threading.Lock()  # one request at a time on the socket
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            try:  # never back into the owner's program: a second copy of it
                self._sock.close()
                _serve(theirs, become)
            finally:
                os._exit(0)
        theirs.close()
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")

    def start(self, argv: list[str], env: dict[str, str], cwd: str,
              fds: dict[int, int], **how: Any) -> int:
        """Fork ``argv`` with ``fds`` (its number -> ours); its pid, once it is our child."""
        request = json.dumps({"argv": argv, "env": env, "cwd": cwd, "targets": list(fds),
                              **how}).encode()
        with self._lock:
            socket.send_fds(self._sock, [struct.pack("!I", len(request)) + request],
                            list(fds.values()))
            answer = _read(self._sock, 8)
        if not answer:
            raise RuntimeError(f"the zygote of process {self.owner} is gone")
        pid, errno = struct.unpack("!ii", answer)
        if pid < 0:
            raise OSError(errno, os.strerror(errno))
        return pid


def _read(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes; b"" when the other end closed first."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return b""
        data += chunk
    return data


def _serve(sock: socket.socket, become: Callable[..., None]) -> None:
    """The zygote: answer each request with the pid of a worker its owner has adopted."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C to the group is its owner's
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    while True:
        msg, fds, _flags, _addr = socket.recv_fds(sock, 4, 4096)
        header = msg + _read(sock, 4 - len(msg)) if msg else b""
        body = _read(sock, struct.unpack("!I", header)[0]) if len(header) == 4 else b""
        if not body:
            os._exit(0)  # the owner is gone
        request = json.loads(body)
        report_r, report_w = os.pipe()
        middle = os.fork()
        if middle == 0:
            try:
                worker = os.fork()
                if worker == 0:
                    _worker(request, fds, sock, (report_r, report_w), become)
                os.write(report_w, struct.pack("!ii", worker, 0))
            except OSError as exc:
                os.write(report_w, struct.pack("!ii", -1, exc.errno or 0))
            finally:
                os._exit(0)
        os.close(report_w)
        answer = os.read(report_r, 8) or struct.pack("!ii", -1, 10)
        os.close(report_r)
        os.waitpid(middle, 0)  # gone: the worker is its owner's child now
        for fd in fds:
            os.close(fd)
        sock.sendall(answer)


def _worker(request: dict[str, Any], fds: list[int], sock: socket.socket,
            pipe: tuple[int, int], become: Callable[..., None]) -> None:
    """In the worker: wait to be adopted by the zygote's owner, then become the request."""
    try:
        for fd in pipe:
            os.close(fd)
        sock.close()
        middle = os.getppid()
        while os.getppid() == middle:
            time.sleep(0.001)
        become(request, dict(zip(request["targets"], fds, strict=True)))
    except BaseException:  # noqa: BLE001 - said on the worker's stderr, never returned
        with contextlib.suppress(BaseException):
            os.write(2, traceback.format_exc().encode())
    os._exit(1)


def place_fds(fds: dict[int, int]) -> None:
    """Leave this process exactly the descriptors ``fds`` names (its number -> ours now)."""
    import fcntl

    moved = {target: fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 1024) for target, fd in fds.items()}
    for target, fd in moved.items():
        os.dup2(fd, target)
    for name in os.listdir("/proc/self/fd"):
        if int(name) not in fds:
            with contextlib.suppress(OSError):
                os.close(int(name))


def set_thread_limits(env: dict[str, str]) -> None:
    """What ``THREAD_LIMITS`` in ``env`` do when a library loads, for libraries loaded."""
    limits = {name: int(env[name]) for name in THREAD_LIMITS if name in env}
    if not limits:
        return
    import threadpoolctl
    import torch

    if "OMP_NUM_THREADS" in limits:
        torch.set_num_threads(limits["OMP_NUM_THREADS"])
    controller = threadpoolctl.ThreadpoolController()
    for api, name in (("openmp", "OMP_NUM_THREADS"), ("openblas", "OPENBLAS_NUM_THREADS"),
                      ("mkl", "MKL_NUM_THREADS")):
        if name in limits:
            controller.select(internal_api=api).limit(limits=limits[name])
    if "NUMEXPR_NUM_THREADS" in limits and "numexpr" in sys.modules:
        sys.modules["numexpr"].set_num_threads(limits["NUMEXPR_NUM_THREADS"])


def thread_limits_alike(env: dict[str, str], alike: Callable[[dict[str, str]], bool]) -> bool:
    """Whether ``env`` loads nothing differently but for thread limits a worker can set."""
    try:
        values = {int(env[name]) for name in THREAD_LIMITS if name in env}
    except ValueError:
        return False
    rest = {k: v for k, v in env.items() if k not in THREAD_LIMITS}
    return all(v > 0 for v in values) and alike(rest)


def install(become: Callable[..., None]) -> Zygote:
    """Make this process's zygote (call before it runs anything)."""
    global _ZYGOTE
    _ZYGOTE = Zygote(become)
    return _ZYGOTE


def zygote() -> Zygote | None:
    """This process's zygote, if it made one (a worker forked from it has none)."""
    return _ZYGOTE if _ZYGOTE is not None and _ZYGOTE.owner == os.getpid() else None
