"""New processes for the CLI without a new interpreter's imports: a fork server.

A test that needs ``python -m al_sim.run ...`` as a process of its own (a sweep whose launcher
starts workers, a run to kill) pays 5-7 s of CPU importing torch, mlflow, sklearn and Hydra
before it does anything, and the suite starts dozens. Each test worker starts one server,
which imports those libraries once and never runs anything itself; a request forks it, and the
child becomes the process a user's command line would start: its own pid, working directory,
environment, argv, ``sys.path[0]``, stdio on files, the module (or script) run as
``__main__``, the interpreter's normal exit (atexit handlers, exit status, a traceback for an
uncaught error). What a fork cannot give is a fresh interpreter's import-time state, so a
request whose environment changes what a library reads when it loads (``PYTHON*``, OpenMP,
BLAS, allocator, ``LD_*``, CUDA) starts a real interpreter instead, and the tests of start-up
itself (which modules a run imports) start their own.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import importlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# What a run or a sweep imports that costs most (python -X importtime); a speed hint only: a
# module left out is imported by the child as usual.
PRELOAD = ("numpy", "torch", "torch._dynamo", "torchvision", "scipy.stats", "pandas",
           "sklearn.metrics", "sklearn.cluster", "matplotlib", "matplotlib.pyplot", "PIL.Image",
           "mlflow", "mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store", "omegaconf",
           "hydra", "hydra.utils", "joblib", "submitit",
           "hydra_plugins.hydra_joblib_launcher.joblib_launcher",
           "hydra_plugins.hydra_submitit_launcher.submitit_launcher")
# Read by a library (or the interpreter) when it loads, so a fork would keep the server's value.
LOAD_TIME_ENV = ("PYTHON", "LD_", "OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_", "MALLOC_",
                 "CUDA_", "NUMEXPR_", "MPL")
# Read when CUDA initialises, which the server (importing only) never does: a submitit job's
# controller sets it.
AT_CUDA_INIT = ("CUDA_VISIBLE_DEVICES",)
# The server's OpenMP policy is the one a run with the default config sets before torch loads.
SERVER_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
REAP_EVERY_S = 0.05
_LAUNCH_ENV: dict[str, str] = {}  # the server's environment as it was started


# -- the server (a process of its own) ------------------------------------------------------

def serve() -> None:
    """Preload, then fork a child per request line on stdin; report pids and exit statuses."""
    _LAUNCH_ENV.update(os.environ)  # before a preloaded library adds to it (sklearn: KMP_*)
    for name in PRELOAD:
        # a hint that fails costs the child the import, no more
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    gc.freeze()  # the children's collections skip (and so do not copy) the preloaded objects
    _send({"ready": True, "path": [os.path.abspath(p) for p in sys.path]})
    pending = b""
    while True:
        readable, _, _ = select.select([0], [], [], REAP_EVERY_S)
        _reap()
        if not readable:
            continue
        data = os.read(0, 1 << 16)
        if not data:
            os._exit(0)
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                _become(request)
                return  # the child: the interpreter exits as after `python -m ...`
            _send({"id": request["id"], "pid": pid})


def _send(message: dict[str, Any]) -> None:
    os.write(1, (json.dumps(message) + "\n").encode())


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send({"pid": pid, "status": status})


def _become(request: dict[str, Any]) -> None:
    """In the child: the process ``python [-m] <target> <args>`` would be, then run it."""
    import runpy

    if request.get("nested"):
        from tests import fork_nested

        server_path = {os.path.abspath(p) for p in sys.path}
        fork_nested.install(lambda child_env: loads_alike(child_env, _LAUNCH_ENV, server_path),
                            request["nested"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(out, fd)
        os.close(out)
    os.close(null)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    target, args = request["target"], request["args"]
    sys.argv, sys.orig_argv = [target, *args], command(target, args, request["module"])
    if request["module"]:
        sys.path[0] = request["cwd"]
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        sys.path[0] = os.path.dirname(os.path.abspath(target))
        runpy.run_path(target, run_name="__main__")


# -- the client (in a test worker) ----------------------------------------------------------

class Forked:
    """The child of a fork server, used like :class:`subprocess.Popen` with text pipes."""

    def __init__(self, server: _Server, args: list[str], pid: int, out: Path, err: Path):
        self.args, self.pid = args, pid
        self.returncode: int | None = None
        self._server, self._out, self._err = server, out, err
        self.stdout, self.stderr = out.open(errors="replace"), err.open(errors="replace")

    def poll(self) -> int | None:
        if self.returncode is None:
            status = self._server.status(self.pid, 0)
            if status is not None:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            status = self._server.status(self.pid, timeout)
            if status is None:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        out, err = self.stdout.read(), self.stderr.read()
        for stream, path in ((self.stdout, self._out), (self.stderr, self._err)):
            stream.close()
            path.unlink(missing_ok=True)
        return out, err

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class _Server:
    """One fork server per test worker and the statuses of the children it reaped."""

    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env.update(SERVER_ENV)
        self.env = env
        self._dir = Path(tempfile.mkdtemp(prefix="al_sim-fork-"))
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from tests.fork_server import serve; serve()"],
            cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin, self._stdout = self._proc.stdin, self._proc.stdout
        hello = json.loads(self._stdout.readline() or b"{}")
        if not hello.get("ready"):
            raise RuntimeError("the fork server did not start")
        self.path = set(hello["path"])
        self._lock = threading.Condition()
        self._pids: dict[int, int] = {}
        self._statuses: dict[int, int] = {}
        self._count = 0
        threading.Thread(target=self._listen, daemon=True).start()
        atexit.register(self.close)

    def _listen(self) -> None:
        for line in self._stdout:
            message = json.loads(line)
            with self._lock:
                if "id" in message:
                    self._pids[message["id"]] = message["pid"]
                    self._statuses.pop(message["pid"], None)  # a reused pid's old status
                else:
                    self._statuses[message["pid"]] = message["status"]
                self._lock.notify_all()

    def start(self, target: str, args: list[str], cwd: Path, env: dict[str, str],
              module: bool, nested: Sequence[str] = ()) -> Forked:
        with self._lock:
            self._count += 1
            ident = self._count
        out, err = self._dir / f"{ident}.out", self._dir / f"{ident}.err"
        out.touch()
        err.touch()
        request = {"id": ident, "target": target, "args": args, "cwd": str(cwd), "env": env,
                   "module": module, "stdout": str(out), "stderr": str(err), "nested": list(nested)}
        self._stdin.write((json.dumps(request) + "\n").encode())
        self._stdin.flush()
        with self._lock:
            if not self._lock.wait_for(lambda: ident in self._pids, timeout=60):
                raise RuntimeError("the fork server did not answer")
            pid = self._pids.pop(ident)
        return Forked(self, command(target, args, module), pid, out, err)

    def status(self, pid: int, timeout: float | None) -> int | None:
        with self._lock:
            self._lock.wait_for(lambda: pid in self._statuses, timeout=timeout)
            return self._statuses.pop(pid, None)

    def forks_alike(self, env: dict[str, str]) -> bool:
        """Whether a child with ``env`` loads nothing differently from this server."""
        return loads_alike(env, self.env, self.path)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._stdin.close()
            self._proc.wait(timeout=30)
        shutil.rmtree(self._dir, ignore_errors=True)


def loads_alike(env: dict[str, str], server_env: dict[str, str], server_path: set[str]) -> bool:
    """Whether a process with ``env`` loads nothing differently from a server with
    ``server_env`` and ``server_path`` (``sys.path``, absolute)."""
    env = {**SERVER_ENV, **env}  # without OMP_WAIT_POLICY, a run sets the server's value
    differ = {k for k in {*env, *server_env} if k.startswith(LOAD_TIME_ENV)
              and k not in AT_CUDA_INIT and env.get(k) != server_env.get(k)}
    if differ == {"PYTHONPATH"} and "PYTHONPATH" in env:  # entries already on the path
        return {os.path.abspath(p) for p in env["PYTHONPATH"].split(os.pathsep) if p
                } <= server_path
    return not differ


def command(target: str, args: list[str], module: bool) -> list[str]:
    """The command line the process stands for: ``python [-m] <target> <args>``."""
    return [sys.executable, *(["-m", target] if module else [target]), *args]


@functools.cache
def _server() -> _Server:
    return _Server()


def start(target: str, args: list[str], cwd: Path, env: dict[str, str] | None = None,
          module: bool = True, nested: Sequence[str] = ()) -> Forked | subprocess.Popen[str]:
    """``python -m <target> <args>`` (``module``) or ``python <target> <args>`` in ``cwd``
    with exactly ``env`` (default: this process's), as a process with text output pipes;
    ``nested``: the ``python -m <one of these>`` it starts fork from it (tests/fork_nested.py)."""
    full_env = dict(os.environ if env is None else env)
    server = _server()
    if server.forks_alike(full_env):
        return server.start(target, args, cwd, full_env, module, nested)
    return subprocess.Popen(command(target, args, module), cwd=cwd, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(target: str, args: list[str], cwd: Path, env: dict[str, str] | None = None,
        module: bool = True, timeout: float = 300, nested: Sequence[str] = ()
        ) -> subprocess.CompletedProcess[str]:
    """:func:`start`, then wait like :func:`subprocess.run` (killed past ``timeout``)."""
    proc = start(target, args, cwd, env, module, nested)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode is not None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


Process = Forked | subprocess.Popen[str]
