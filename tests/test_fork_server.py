"""The tests' fork server gives a process what ``python [-m] <target>`` would: its own pid,
working directory, environment, argv, ``sys.path[0]``, output and exit status, signals as
Popen reports them; an environment a library reads at load time gets a real interpreter."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests import fork_server

PROBE = """import os, sys, time
print("|".join(map(str, (os.getcwd(), sys.argv[1:], os.environ.get("PROBE"), sys.path[0],
                         os.getppid()))))
print("to stderr", file=sys.stderr)
if sys.argv[1:] == ["wait"]:
    time.sleep(60)
sys.exit(int(sys.argv[1]) if sys.argv[1:] and sys.argv[1].isdigit() else 0)
"""


def test_a_script_runs_as_its_own_process_in_its_folder(tmp_path: Path) -> None:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PROBE": "seen"}
    proc = fork_server.run(str(script), ["3"], work, env, module=False)
    assert proc.returncode == 3
    cwd, args, probe, path0, parent = proc.stdout.strip().split("|")
    assert cwd == str(work) and args == "['3']" and probe == "seen"
    assert path0 == str(tmp_path) and int(parent) != os.getpid()  # the server's child
    assert proc.stderr == "to stderr\n"


def test_a_killed_child_reports_the_signal_and_an_error_is_a_traceback(tmp_path: Path) -> None:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    proc = fork_server.start(str(script), ["wait"], tmp_path, module=False)
    assert isinstance(proc, fork_server.Forked)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=0.2)
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    failing = tmp_path / "fails.py"
    failing.write_text("raise ValueError('boom')\n")
    out = fork_server.run(str(failing), [], tmp_path, module=False)
    assert out.returncode == 1 and "ValueError: boom" in out.stderr and "Traceback" in out.stderr


def test_an_environment_read_at_load_time_gets_a_new_interpreter(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "7"}
    proc = fork_server.start("platform", [], tmp_path, env)
    assert isinstance(proc, subprocess.Popen) and proc.args[:3] == [sys.executable, "-m",
                                                                    "platform"]
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.strip()
