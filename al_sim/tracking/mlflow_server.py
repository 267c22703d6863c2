"""``python -m al_sim.server --dir DIR``: an MLflow tracking server on PostgreSQL, one command.

Creates (first time) or reuses a PostgreSQL cluster in ``DIR/pgdata``, starts
it on 127.0.0.1, then runs ``mlflow server`` on it with artifacts served
through the server (``--serve-artifacts``, stored in ``DIR/artifacts``), so
workers need only ``tracking.uri=http://HOST:PORT``, no shared disk. Ctrl-C
(or SIGTERM) stops both. The database password is generated once, kept in
``DIR/server.json`` (mode 600) and handed to mlflow through its environment,
never on a command line; so is the token every request to the server must carry
(:mod:`al_sim.tracking.server_token`). Needs ``initdb`` / ``pg_ctl`` (PostgreSQL >= 12) on
PATH and ``pip install -e ".[server]"`` (the PostgreSQL driver). PostgreSQL
refuses to run as root: as root, the cluster runs as ``--db-user`` (an
existing system user, default ``postgres``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from al_sim.runtime.errors import EXIT_USER_ERROR, os_error_line
from al_sim.runtime.files import atomic_write
from al_sim.tracking.contract import CLIENT_TOKEN_ENV
from al_sim.tracking.postgres import (
    ServerError,
    create_database,
    init_cluster,
    postgres_alive,
    restart_postgres,
    start_postgres,
    stop_postgres,
)
from al_sim.tracking.server_token import TOKEN_ENV

STATE_FILE = "server.json"
POOL_SIZE, POOL_OVERFLOW = 10, 20  # connections per mlflow worker process
SPARE_CONNECTIONS = 20  # for psql, migrations, the driver's own checks
MAX_PORT = 65535
GUARD_APP = "al-sim-token"  # pyproject.toml's mlflow.app entry point (tracking/server_token.py)
TOKEN_MIN_CHARS = 32
WATCH_S = 2.0  # how often the server checks that PostgreSQL still runs
RESTART_WAIT_S = 60.0  # how long a stopped PostgreSQL may take to start again


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float, proc: subprocess.Popen | None = None,
                  what: str = "server") -> None:
    """Block until ``host:port`` accepts connections; ServerError on timeout or early exit."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError(f"{what} exited with status {proc.returncode} while starting")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise ServerError(f"{what} did not listen on {host}:{port} within {timeout_s:.0f} s")


def _state(root: Path, db_port: int | None) -> dict:
    """The cluster's password and port, and the server's token, created on first use and
    kept in ``server.json``."""
    path = root / STATE_FILE
    state = _read_state(path) if path.exists() else {}
    if not isinstance(state.get("password"), str) or not isinstance(state.get("db_port"), int):
        if (root / "pgdata" / "PG_VERSION").exists():  # the database's password is lost
            raise ServerError(
                f"{path} is damaged (it holds the password of the database in "
                f"{root / 'pgdata'}): restore it from a backup, or give --dir a new folder "
                "(an empty store)")
        state = {}
    state.setdefault("password", secrets.token_urlsafe(24))
    if not isinstance(state.get("token"), str) or len(state["token"]) < TOKEN_MIN_CHARS:
        state["token"] = secrets.token_urlsafe(32)  # every request to the server carries it
    if db_port:
        state["db_port"] = db_port
    state.setdefault("db_port", free_port())
    atomic_write(path, json.dumps(state))  # mode 0600: it holds the password
    return state


def _read_state(path: Path) -> dict:
    """``server.json`` as a dict; an unreadable or ill-formed file as an empty one."""
    try:
        state = json.loads(path.read_bytes())
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


def serve(root: Path, host: str, port: int, db_port: int | None, workers: int,
          db_user: str | None, allowed_hosts: str | None = None) -> int:
    """Start PostgreSQL and ``mlflow server``; block until either stops or a signal comes."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if shutil.which(tool) is None:
            raise ServerError(f"{tool} is not on PATH: install PostgreSQL (>= 12) server binaries")
    root.mkdir(parents=True, exist_ok=True)
    if db_user is not None:
        os.chmod(root, 0o755)  # the database user must reach DIR/pgdata
    state = _state(root.resolve(), db_port)
    data, log = root.resolve() / "pgdata", root.resolve() / "postgres.log"
    if not (data / "PG_VERSION").exists():
        init_cluster(data, state["password"], db_user)
    start_postgres(data, state["db_port"], db_user, log,
                   workers * (POOL_SIZE + POOL_OVERFLOW) + SPARE_CONNECTIONS)
    mlflow = None
    try:
        env = dict(os.environ, MLFLOW_BACKEND_STORE_URI=create_database(state["db_port"],
                                                                        state["password"]))
        # MLflow's default pool (5 + 10 overflow per worker) makes many writers queue and time
        # out (benchmarks/tracking_store_load.py, N=64); PostgreSQL is started with room for all.
        env.setdefault("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", str(POOL_SIZE))
        env.setdefault("MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW", str(POOL_OVERFLOW))
        # MLflow 3's GenAI job runner (seven huey consumer processes) serves nothing al_sim
        # logs; set MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true to have it anyway.
        env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        env[TOKEN_ENV] = state["token"]
        artifacts = root.resolve() / "artifacts"
        artifacts.mkdir(exist_ok=True)
        security = ["--allowed-hosts", allowed_hosts] if allowed_hosts else []
        mlflow = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port),
             "--serve-artifacts", "--artifacts-destination", artifacts.as_uri(),
             "--workers", str(workers), "--app-name", GUARD_APP, *security], env=env)
        wait_for_port("127.0.0.1" if host in ("0.0.0.0", "") else host, port, 180, mlflow,
                      "mlflow server")
        shown = socket.gethostname() if host in ("0.0.0.0", "") else host
        print(f"MLflow server on PostgreSQL: tracking.uri=http://{shown}:{port} "
              f"(data in {root}; Ctrl-C stops it)\n  every request needs its token: jobs and "
              f"al_sim.compare read it from {CLIENT_TOKEN_ENV} (export {CLIENT_TOKEN_ENV}="
              f"$(python -m al_sim.server --dir {root} --token)); the UI: "
              f"http://{shown}:{port}/?token={state['token']}", flush=True)
        if not allowed_hosts and host not in ("127.0.0.1", "localhost"):
            print(f"  host names in tracking.uri need --allowed-hosts (e.g. {shown}:{port}); "
                  "IP addresses and localhost work without", flush=True)
        return _watch(mlflow, data, state["db_port"], db_user, log,
                      workers * (POOL_SIZE + POOL_OVERFLOW) + SPARE_CONNECTIONS)
    finally:
        if mlflow is not None and mlflow.poll() is None:
            mlflow.terminate()
            try:
                mlflow.wait(timeout=30)
            except subprocess.TimeoutExpired:
                mlflow.kill()
        stop_postgres(data, db_user)


def _watch(mlflow: subprocess.Popen, data: Path, db_port: int, db_user: str | None, log: Path,
           max_connections: int) -> int:
    """Wait for mlflow to exit (its exit status); start PostgreSQL again whenever it stopped."""
    while True:
        try:
            return mlflow.wait(timeout=WATCH_S)
        except subprocess.TimeoutExpired:
            pass
        if not postgres_alive(data):
            print(f"warning: PostgreSQL ({data}) stopped (see {log}); starting it again; jobs "
                  "retry what failed meanwhile", file=sys.stderr, flush=True)
            restart_postgres(data, db_port, db_user, log, max_connections, RESTART_WAIT_S)
            print("PostgreSQL is back", file=sys.stderr, flush=True)


def print_token(root: Path) -> int:
    """Print the token of the server in ``root``; exit status 2, with the fix, if it has none."""
    state = _read_state(root / STATE_FILE) if (root / STATE_FILE).is_file() else {}
    if not isinstance(state.get("token"), str):
        print(f"error: {root / STATE_FILE} holds no server token: start the server once with "
              f"python -m al_sim.server --dir {root}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(state["token"])
    return 0


def _default_db_user() -> str | None:
    return "postgres" if os.geteuid() == 0 else None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _port(text: str) -> int:
    """A TCP port number from the command line (argparse's usage error otherwise)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"{text} is not a port number (1-{MAX_PORT})")
    return port


def _count(text: str) -> int:
    """A whole number > 0 from the command line."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number > 0")
    return int(text)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m al_sim.server", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path("mlflow_server"),
                        help="where the database and the artifacts live (default: mlflow_server)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address mlflow listens on (0.0.0.0 for other machines)")
    parser.add_argument("--port", type=_port, default=5000)
    parser.add_argument("--db-port", type=_port, default=None,
                        help="PostgreSQL port on 127.0.0.1 (default: a free one, kept)")
    parser.add_argument("--workers", type=_count, default=2,
                        help="mlflow server worker processes")
    parser.add_argument("--allowed-hosts", default=None, metavar="HOST[:PORT],...",
                        help="host names the jobs' tracking.uri may use (mlflow server "
                             "--allowed-hosts; default: localhost and private IP addresses)")
    parser.add_argument("--db-user", default=_default_db_user(),
                        help="system user that runs PostgreSQL when started as root")
    parser.add_argument("--token", action="store_true",
                        help=f"print the server's token ({CLIENT_TOKEN_ENV} of its clients) "
                             "and exit")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.token:
            sys.exit(print_token(args.dir))
        sys.exit(serve(args.dir, args.host, args.port, args.db_port, args.workers,
                       args.db_user if os.geteuid() == 0 else None, args.allowed_hosts))
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except OSError as exc:  # --dir cannot be made or written
        print(os_error_line(exc, "give --dir a folder"), file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)


if __name__ == "__main__":
    main()
