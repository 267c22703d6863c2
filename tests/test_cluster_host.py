"""A tracking server reached by host name (``python -m al_sim.server --allowed-hosts``).

MLflow's server answers 403 "Invalid Host header" to any host name it was not told about;
a sweep must stop at its parent run with one line naming the option, before any job starts.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FAST_CLI, REPO, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
for _tool in ("initdb", "pg_ctl", "postgres"):
    if shutil.which(_tool) is None:
        pytestmark.append(pytest.mark.skip(reason=f"PostgreSQL: no {_tool}"))
pytest.importorskip("psycopg2", reason='pip install -e ".[server]"')

from al_sim.tracking.contract import CLIENT_TOKEN_ENV  # noqa: E402
from al_sim.tracking.mlflow_server import STATE_FILE  # noqa: E402
from tests.test_cluster import free_port, stop, wait_port  # noqa: E402

HOST = socket.gethostname()


def _loopback_name() -> bool:
    try:
        return socket.gethostbyname(HOST) == "127.0.0.1" and HOST != "localhost"
    except OSError:
        return False


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    if not _loopback_name():
        pytest.skip(f"this machine's name {HOST} does not resolve to 127.0.0.1")
    path = Path(tempfile.mkdtemp(prefix="al_host_"))
    path.chmod(0o755)  # PostgreSQL, run as another user when root, must reach it
    yield path
    os.environ.pop(CLIENT_TOKEN_ENV, None)
    shutil.rmtree(path, ignore_errors=True)


def serve(root: Path, port: int, db_port: int, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "al_sim.server", "--dir", str(root / "srv"), "--port", str(port),
         "--db-port", str(db_port), "--workers", "1", *extra], cwd=root,
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=(root / "server.log").open("a"),
        stderr=subprocess.STDOUT)
    wait_port(port, proc, "mlflow server")
    os.environ[CLIENT_TOKEN_ENV] = json.loads((root / "srv" / STATE_FILE).read_text())["token"]
    return proc


def test_a_host_name_needs_allowed_hosts_and_works_with_it(root: Path) -> None:
    port, db_port = free_port(), free_port()
    uri = f"http://{HOST}:{port}"
    proc = serve(root, port, db_port)
    try:
        refused = run_cli(["-m", "seed=0,1", "budget=tiny", *FAST_CLI, f"tracking.uri={uri}",
                           f"hydra.sweep.dir={root / 'sweep'}"], root)
    finally:
        stop(proc)
    assert refused.returncode == 2, refused.stderr[-2000:]
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"--allowed-hosts {HOST}:{port}" in errors[0], refused.stderr
    assert "Traceback" not in refused.stderr and "check that the server" not in refused.stderr
    assert not list((root / "sweep").glob("[0-9]*")), "jobs were launched without a parent run"

    proc = serve(root, port, db_port, "--allowed-hosts", f"{HOST}:{port}")
    try:
        done = run_cli(["budget=tiny", *FAST_CLI, f"tracking.uri={uri}",
                        f"hydra.run.dir={root / 'run'}"], root)
    finally:
        stop(proc)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"view: open {uri}/#/experiments/" in done.stderr  # the server is the UI
    assert "mlflow ui --backend-store-uri http" not in done.stderr
