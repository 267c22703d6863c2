"""The PostgreSQL cluster under ``python -m al_sim.server``: made, started, watched, stopped.

It listens on 127.0.0.1 only, with a password-protected role; as root it runs as another
system user (PostgreSQL refuses root). A cluster that stops while the server runs (killed,
crashed) is started again: MLflow's connection pool checks its connections before use, and
the jobs retry the requests that failed meanwhile.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

DB_NAME = "mlflow"
DB_ROLE = "mlflow"
PID_FILE = "postmaster.pid"


class ServerError(Exception):
    """A problem the user fixes (missing binaries, a port in use, ...)."""


def _runner(db_user: str | None) -> dict:
    """Popen keyword arguments that run a PostgreSQL binary as ``db_user`` when root."""
    return {} if db_user is None else {"user": db_user}


def _pg(args: list[str], db_user: str | None, log: Path | None = None) -> None:
    out = subprocess.run(args, capture_output=True, text=True, check=False, timeout=120,
                         **_runner(db_user))
    if out.returncode != 0:
        where = f" (see {log})" if log else ""
        detail = (out.stderr or out.stdout)[-500:]
        raise ServerError(f"{args[0]} failed{where}: {detail}")


def init_cluster(data: Path, password: str, db_user: str | None) -> None:
    """``initdb`` a new cluster at ``data`` with a password-protected ``mlflow`` role."""
    data.mkdir(mode=0o700, parents=True)
    pwfile = data.parent / ".pgpass.tmp"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    if db_user is not None:
        shutil.chown(data, db_user)
        shutil.chown(pwfile, db_user)
    try:
        _pg(["initdb", "-D", str(data), "-U", DB_ROLE, "--auth=scram-sha-256",
             f"--pwfile={pwfile}", "-E", "UTF8", "--no-instructions"], db_user)
    finally:
        pwfile.unlink(missing_ok=True)


def start_postgres(data: Path, port: int, db_user: str | None, log: Path,
                   max_connections: int = 100) -> None:
    """Start the cluster on 127.0.0.1:``port`` (socket in the data dir) and wait for it."""
    if db_user is not None and not log.exists():
        log.touch()
        shutil.chown(log, db_user)
    opts = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={data} "
            f"-c max_connections={max_connections}")
    _pg(["pg_ctl", "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60", "start"],
        db_user, log)


def stop_postgres(data: Path, db_user: str | None) -> None:
    """Stop the cluster (fast shutdown: open sessions are ended, data is flushed)."""
    subprocess.run(["pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True,
                   check=False, timeout=120, **_runner(db_user))


def create_database(port: int, password: str) -> str:
    """Create the ``mlflow`` database if missing; its SQLAlchemy URI."""
    try:
        import psycopg2
    except ImportError as exc:
        raise ServerError('the PostgreSQL driver is missing: pip install -e ".[server]"') from exc
    conn = psycopg2.connect(host="127.0.0.1", port=port, user=DB_ROLE, password=password,
                            dbname="postgres", connect_timeout=10)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,))
            if cur.fetchone() is None:
                cur.execute(f"CREATE DATABASE {DB_NAME}")
    finally:
        conn.close()
    return f"postgresql+psycopg2://{DB_ROLE}:{password}@127.0.0.1:{port}/{DB_NAME}"


def postgres_alive(data: Path) -> bool:
    """Whether the cluster in ``data`` has a running postmaster (its pid file's process)."""
    try:
        pid = int((data / PID_FILE).read_text().split("\n", 1)[0])
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def restart_postgres(data: Path, port: int, db_user: str | None, log: Path,
                     max_connections: int, wait_s: float) -> None:
    """Start a cluster that stopped, trying for up to ``wait_s`` (the killed postmaster's
    backends must exit first: PostgreSQL refuses to start beside their shared memory)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            start_postgres(data, port, db_user, log, max_connections)
            return
        except ServerError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
