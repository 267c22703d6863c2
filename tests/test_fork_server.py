"""The tests' fork server gives a process what ``python [-m] <target>`` would: its own pid,
working directory, environment, argv, ``sys.path[0]``, output and exit status, signals as
Popen reports them; an environment a library reads at load time gets a real interpreter."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests import fork_nested, fork_server

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


NESTED_PARENT = """import atexit, os, subprocess, sys, tempfile
keep = tempfile.TemporaryDirectory()
atexit.register(print, "parent atexit")
print("parent line")  # still in the parent's buffer when the child forks
env = {**os.environ, "PROBE": "seen", "PARENT": str(os.getpid())}
for extra in ({}, {"OMP_NUM_THREADS": "1"}):
    proc = subprocess.run([sys.executable, "-m", "nested_probe", "a b"], capture_output=True,
                          text=True, env={**env, **extra}, cwd=sys.argv[1])
    print(proc.returncode, proc.stdout.strip(), proc.stderr.strip(), os.path.isdir(keep.name),
          sep="|")
"""
NESTED_PROBE = """import os, sys
print("torch" in sys.modules, os.getppid() == int(os.environ["PARENT"]),
      os.environ.get("PROBE"), sys.argv[1:], os.getcwd(), sep=";")
print("err", file=sys.stderr)
sys.exit(3)
"""


def test_a_nested_run_forks_from_its_parent_and_starts_as_a_new_interpreter(
        tmp_path: Path) -> None:
    """The parent's buffered output, atexit handlers and temporary folders stay the parent's;
    an environment read at load time gets a real interpreter."""
    (tmp_path / "parent.py").write_text(NESTED_PARENT)
    work = tmp_path / "work"
    work.mkdir()
    (work / "nested_probe.py").write_text(NESTED_PROBE)
    proc = fork_server.run(str(tmp_path / "parent.py"), [str(work)], tmp_path, module=False,
                           nested=["nested_probe"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "parent line" and lines[-1] == "parent atexit" and len(lines) == 4
    forked, real = (line.split("|") for line in lines[1:3])
    # preloaded torch: a fork of the parent; with OMP_NUM_THREADS, a new interpreter
    assert forked == ["3", f"True;True;seen;['a b'];{work}", "err", "True"]
    assert real == ["3", f"False;True;seen;['a b'];{work}", "err", "True"]


SWEEP_PARENT = """import json, os, sys
from pathlib import Path
import submitit
from joblib import Parallel, delayed

def probe(marker):
    import sys, os
    forked = "mlflow" in sys.modules  # preloaded by the fork server, never imported here
    import torch
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the listing's own descriptor
            pass
    print("task output", flush=False)
    return {"forked": forked, "ppid": os.getppid(), "grandparent": int(
        Path(f"/proc/{os.getppid()}/stat").read_text().split(")")[1].split()[1]),
            "threads": torch.get_num_threads(), "omp": os.environ.get("OMP_NUM_THREADS"),
            "cwd": os.getcwd(), "marker_open": marker in links}

marker = Path("marker.txt").resolve()
held = marker.open("w")  # the parent's own file: no worker may hold it
loky = Parallel(n_jobs=2)(delayed(probe)(str(marker)) for _ in range(2))
executor = submitit.LocalExecutor(folder="jobs")
executor.update_parameters(timeout_min=5)
job = executor.submit(probe, str(marker))
print(json.dumps({"pid": os.getpid(), "loky": loky, "submitit": job.result(),
                  "log": Path(job.paths.stdout).read_text()}))
"""


def test_a_sweeps_workers_fork_from_a_pristine_copy_of_their_launcher(tmp_path: Path) -> None:
    """loky's workers and submitit's controller are the launcher's children (they fork from
    its zygote) and submitit's task the controller's; each has the thread limit joblib set,
    the launcher's folder, none of its files, and a task's output reaches its log."""
    (tmp_path / "parent.py").write_text(SWEEP_PARENT)
    proc = fork_server.run(str(tmp_path / "parent.py"), [], tmp_path, module=False,
                           nested=fork_nested.sweep_workers(["-m"]))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    for worker in out["loky"]:
        assert worker["forked"] and worker["ppid"] == out["pid"]
        assert worker["threads"] == int(worker["omp"]) and not worker["marker_open"]
        assert worker["cwd"] == str(tmp_path)
    task = out["submitit"]
    assert task["forked"] and task["grandparent"] == out["pid"]  # task -> controller -> us
    assert task["cwd"] == str(tmp_path) and not task["marker_open"]
    assert "task output" in out["log"]
