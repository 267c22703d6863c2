"""In a fork server's child that starts runs of its own (a benchmark's ``--smoke``): its
``python -m al_sim.run`` processes fork from it too.

The child already holds torch, mlflow and Hydra, so a run it starts through :mod:`subprocess`
skips the 5-7 s of imports a new interpreter pays. It is still a process of its own, started by
``subprocess.Popen`` (pid, pipes, ``wait``, ``poll``, signals as Popen gives them), and it begins
as a new interpreter would: the parent's atexit handlers, finalizers, signal handlers, threads
and unflushed output are not carried over, and it exits through the interpreter's exit steps
(non-daemon threads joined, atexit handlers, output flushed). Anything else (another program,
``-c``, an interpreter flag, a user or group change, an environment a library
reads at load time) Popen starts as usual.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import io
import os
import runpy
import signal
import subprocess
import sys
import threading
import traceback
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from tests import fork_zygote

MODULES = ("al_sim.run", "al_sim.compare")
# The worker processes a sweep's launcher starts: loky's workers, submitit's job controllers
# and their tasks (tests/fork_zygote.py)
SWEEP_WORKERS = (*fork_zygote.MODULES, "submitit.core._submit")
_INSTALLED: dict[str, Any] = {}  # the real functions patched here, and install()'s arguments


def sweep_workers(args: Sequence[str]) -> tuple[str, ...]:
    """The workers to fork for ``python -m al_sim.run <args>``: a sweep's, or none."""
    return SWEEP_WORKERS if any(a in ("-m", "--multirun") for a in args) else ()


def install(alike: Callable[[dict[str, str]], bool], modules: Sequence[str] = MODULES) -> None:
    """Fork this process's ``subprocess`` starts of ``python -m <one of modules>``; ``alike``
    tells whether an environment loads nothing differently from this process's libraries.
    Launcher workers among ``modules`` (tests/fork_zygote.py) fork from a zygote made now,
    the rest from this process as it is when it starts them. A sweep among the rest forks
    its own workers in turn (from a zygote of its own)."""
    original = _INSTALLED.setdefault(
        "execute_child", subprocess.Popen._execute_child)  # type: ignore[attr-defined]
    _INSTALLED.update(alike=alike, modules=tuple(modules))
    workers = [m for m in modules if m in fork_zygote.MODULES]

    def execute_child(self: subprocess.Popen, args: Any, executable: Any, preexec_fn: Any,
                      *rest: Any) -> None:
        (close_fds, pass_fds, cwd, env, _startupinfo, _creationflags, shell,
         p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite, _restore_signals,
         gid, gids, uid, umask, start_new_session, process_group) = rest
        argv = _python_argv(args, executable, shell, (gid, gids, uid), modules)
        if argv is None:  # any other program: as Popen starts it
            return original(self, args, executable, preexec_fn, *rest)
        full_env = {os.fsdecode(k): os.fsdecode(v)
                    for k, v in (os.environ if env is None else env).items()}
        zygote = fork_zygote.zygote() if _module(argv) in workers else None
        if zygote is not None:
            if preexec_fn is not None or not close_fds or not alike(full_env):
                return original(self, args, executable, preexec_fn, *rest)
            _flush()
            fds = {fd: fd for fd in pass_fds}
            fds |= {target: (fd if fd != -1 else target)
                    for target, fd in zip((0, 1, 2), (p2cread, c2pwrite, errwrite), strict=True)}
            where = os.getcwd() if cwd is None else os.fsdecode(cwd)
            self.pid = zygote.start(argv, full_env, where, fds, umask=umask,
                                    new_session=start_new_session, process_group=process_group)
        else:
            if not alike(full_env):
                return original(self, args, executable, preexec_fn, *rest)
            _flush()
            pid = os.fork()
            if pid == 0:
                _child(argv, cwd, full_env, (p2cread, c2pwrite, errwrite), umask,
                       start_new_session, process_group, preexec_fn)
            self.pid = pid
        self._child_created = True
        self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite)
        return None

    subprocess.Popen._execute_child = execute_child  # type: ignore[attr-defined]
    if fork_zygote.LOKY in workers:
        _fork_loky(alike)
    if workers:  # last: its workers start with the patches above
        fork_zygote.install(_become_worker)


def _fork_loky(alike: Callable[[dict[str, str]], bool]) -> None:
    """Fork loky's worker processes (started by its ``fork_exec``, not Popen) from the zygote."""
    from joblib.externals.loky.backend import fork_exec as module

    original = _INSTALLED.setdefault("fork_exec", module.fork_exec)

    def fork_exec(cmd: list[str], keep_fds: Sequence[int], env: dict[str, str] | None = None
                  ) -> int:
        argv = _python_argv(cmd, None, False, (None, None, None), (fork_zygote.LOKY,))
        full_env = {**os.environ, **(env or {})}
        zygote = fork_zygote.zygote()
        if (zygote is None or argv is None
                or not fork_zygote.thread_limits_alike(full_env, alike)):
            return original(cmd, keep_fds, env)
        _flush()
        fds = {fd: fd for fd in (0, 1, 2, *keep_fds)}
        return zygote.start(argv, full_env, os.getcwd(), fds, umask=-1, new_session=False,
                            process_group=None)

    module.fork_exec = fork_exec


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):  # else the child would write them out again
        with contextlib.suppress(Exception):
            stream.flush()


def _module(argv: list[str]) -> str:
    return argv[argv.index("-m") + 1]


def _become_worker(request: dict[str, Any], fds: dict[int, int]) -> None:
    """In a worker forked from the zygote: the process ``request["argv"]`` would be."""
    fork_zygote.place_fds(fds)
    fork_zygote.set_thread_limits(request["env"])
    _child(request["argv"], request["cwd"], request["env"], (-1, -1, -1), request["umask"],
           request["new_session"], request["process_group"], None)


def _python_argv(args: Any, executable: Any, shell: bool, ids: tuple[Any, ...],
                 modules: Sequence[str]) -> list[str] | None:
    """``args`` as a list when it is ``<this python> -m <one of modules> ...``, else None."""
    if shell or any(i is not None for i in ids):
        return None
    if not isinstance(args, Sequence) or isinstance(args, (str, bytes)):
        return None
    argv = [os.fsdecode(a) for a in args]
    if executable is not None and os.fsdecode(executable) != argv[0]:
        return None
    flags = 2 if argv[1:2] == ["-u"] else 1  # -u: unbuffered output, as submitit's tasks ask
    if (len(argv) > flags + 1 and argv[0] == sys.executable and argv[flags] == "-m"
            and argv[flags + 1] in modules):
        return argv
    return None


def _child(argv: list[str], cwd: Any, env: dict[str, str], fds: tuple[int, int, int],
           umask: int, new_session: bool, process_group: int | None,
           preexec_fn: Callable[[], object] | None) -> None:
    """Become ``argv`` and exit; never returns into the parent's stack."""
    code = 1
    try:
        gc.freeze()  # the parent's objects: never collected (nor finalised) here
        atexit._clear()
        for finalizer in list(weakref.finalize._registry):  # type: ignore[attr-defined]
            finalizer.atexit = False
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                    signal.SIGUSR2, signal.SIGALRM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # as a Python interpreter starts
            signal.signal(sig, signal.SIG_IGN)
        signal.set_wakeup_fd(-1)
        for fd, target in zip(fds, (0, 1, 2), strict=True):
            if fd != -1:
                os.dup2(fd, target)
        sys.stdin, sys.stdout, sys.stderr = sys.__stdin__, sys.__stdout__, sys.__stderr__
        if "-u" in argv[1:argv.index("-m")]:
            sys.stdout, sys.stderr = _unbuffered(1, "strict"), _unbuffered(2, "backslashreplace")
        if cwd is not None:
            os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        if umask >= 0:
            os.umask(umask)
        if new_session:
            os.setsid()
        if process_group is not None and process_group >= 0:
            os.setpgid(0, process_group)
        if preexec_fn is not None:  # where Popen calls it: in the child, before the program
            preexec_fn()
        sys.argv, sys.orig_argv = argv[argv.index("-m") + 1:], argv
        sys.path[0] = os.getcwd()
        _nest(sys.argv[1:])
        _job_folder_first(_module(argv))
        code = _run(_module(argv))
    except BaseException:  # noqa: BLE001 - a failure to become argv: said, exit status 1
        with contextlib.suppress(BaseException):
            os.write(2, traceback.format_exc().encode())
    finally:
        with contextlib.suppress(BaseException):
            threading._shutdown()  # type: ignore[attr-defined]
            atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        os._exit(code)


def _nest(args: list[str]) -> None:
    """A sweep forked here forks its launcher's workers too, as one a test starts does."""
    modules = _INSTALLED.get("modules", ())
    workers = sweep_workers(args)
    if workers and not set(workers) <= set(modules):
        install(_INSTALLED["alike"], (*modules, *workers))


def _unbuffered(fd: int, errors: str) -> io.TextIOWrapper:
    """A text stream on ``fd`` that writes at once, as under ``python -u``."""
    raw = open(fd, "wb", buffering=0, closefd=False)  # noqa: SIM115 - the stream's own
    return io.TextIOWrapper(raw, encoding=sys.getfilesystemencoding(), errors=errors,
                            write_through=True)


def _job_folder_first(module: str) -> None:
    """submitit's local job controller opens its logs in ``<folder>/<its pid>/``, which its
    submitter makes just after starting it: an interpreter's start-up always lets the
    submitter go first, a fork may not (the controller then dies, its job lost). The folder
    is made here as the submitter makes it (``exist_ok``)."""
    if module == "submitit.local._local":
        from submitit.core.utils import JobPaths

        JobPaths(sys.argv[1], str(os.getpid())).folder.mkdir(parents=True, exist_ok=True)


def _run(module: str) -> int:
    """Run ``module`` as ``__main__``; the exit status the interpreter would give."""
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught error
        sys.excepthook(*sys.exc_info())
        return 1
    return 0
