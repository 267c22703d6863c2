"""The MLflow store: calls retried while it is busy, a new store made once, a sweep's parent run.

Shared by the writer (:mod:`al_sim.sinks.mlflow_writer`), the sweep callback
(:mod:`al_sim.app.sweep_callback`), which creates, restarts and closes the parent run, and the
report's reader (which store file a ``sqlite:`` URI names).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

import sqlalchemy
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy.exc import DatabaseError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from al_sim.runtime.errors import TrackingError
from al_sim.runtime.files import fsync_dir
from al_sim.runtime.interrupts import deferred
from al_sim.runtime.reading import problem, reading
from al_sim.tracking.contract import redact, sqlite_file
from al_sim.tracking.experiments import experiment_id
from al_sim.tracking.reachability import check_reachable, refused_host
from al_sim.tracking.retry import RetryPolicy, is_transient, retry
from al_sim.tracking.store_fixes import artifact_fix, driver_fix, scheme_fix, store_fix
from al_sim.tracking.store_template import build_empty_store, count_rows

T = TypeVar("T")


STORE_ERRORS = (MlflowException, OSError, OperationalError)  # sqlite's "locked" arrives raw


class _ReportedErrors(logging.Filter):
    """Drops MLflow's own traceback for a store error it raises on: al_sim retries a transient
    one and says so, and reports any other as one line (:func:`call_with_retries`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (exc is not None and (is_transient(exc) or isinstance(exc, SQLAlchemyError)))


logging.getLogger("mlflow.store.db.utils").addFilter(_ReportedErrors())


def _whole(fn: Callable[[], T]) -> T:
    """``fn()`` with Ctrl-C / SIGTERM held until it returns (no half-done transaction)."""
    with deferred():
        return fn()


def call_with_retries(what: str, fn: Callable[[], T], uri: str,
                      policy: RetryPolicy | int | None = None, artifacts: str | None = None) -> T:
    """``fn()``, retried with capped back-off while the store fails transiently.

    Transient: locked, unreachable, restarting (``al_sim.tracking.retry``). When the
    failure persists past ``policy`` (``tracking.retries`` /
    ``tracking.retry_timeout_s``), TrackingError: the run ends with exit 2, its
    checkpoint holds the last round whose metrics reached the store, and
    re-running the same command resumes it into the same MLflow run. ``artifacts``: the
    run's artifact location, named with its fix when a call that writes there fails.
    """
    if not isinstance(policy, RetryPolicy):
        policy = RetryPolicy() if policy is None else RetryPolicy(retries=policy)
    try:
        return retry(f"MLflow {what}", lambda: _whole(fn), policy, STORE_ERRORS)
    except ImportError as exc:  # the database's driver (SQLAlchemy imports it on first use)
        raise TrackingError(
            f"MLflow {what} at {redact(uri)} needs the Python module '{exc.name}', which is not "
            f"installed: {driver_fix(exc.name)}, or set tracking.enabled=false") from exc
    except STORE_ERRORS as exc:
        if (refused := refused_host(uri, str(exc))) is not None:
            raise refused from None
        if (schemes := getattr(exc, "supported_uri_schemes", None)) is not None:
            raise TrackingError(scheme_fix(redact(uri), schemes)) from None
        first = next((line for line in str(exc).splitlines() if line and not line.startswith(
            "(raised as a result of")), type(exc).__name__)[:300]  # SQLAlchemy's note first
        if len(first) > 200 and ". " in first:  # a paragraph (MLflow's): its first sentence
            first = first[:first.index(". ")]
        where, fix = ((artifacts, artifact_fix(artifacts, exc)) if artifacts else
                      (uri, store_fix(uri, exc)))
        raise TrackingError(
            f"MLflow {what} failed at {redact(where)}: {redact(first)}; {fix}, "
            "or set tracking.enabled=false; the run resumes from its checkpoint when run again"
        ) from exc


@contextlib.contextmanager
def _folder_locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` across processes (no lock where it cannot be taken)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):  # a file system without flock: unlocked, as before
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# Session-level locks a database server holds for one connection (released if it dies):
# PostgreSQL takes a 64-bit key, MySQL / MariaDB a name and a wait in seconds.
_PG_LOCK_KEY = 0x616C5F73696D  # "al_sim"
_MYSQL_LOCK = "al_sim.store_setup"
_MYSQL_LOCK_WAIT_S = 600


@contextlib.contextmanager
def _database_locked(uri: str) -> Iterator[None]:
    """An exclusive lock held on the database server of ``uri`` (PostgreSQL, MySQL)."""
    dialect = uri.split(":", 1)[0].split("+", 1)[0]
    statements = {
        "postgresql": ("SELECT pg_advisory_lock(:key)", "SELECT pg_advisory_unlock(:key)"),
        "mysql": ("SELECT GET_LOCK(:name, :wait)", "SELECT RELEASE_LOCK(:name)"),
    }.get(dialect)
    if statements is None:
        yield
        return
    take, give = statements
    args = {"key": _PG_LOCK_KEY, "name": _MYSQL_LOCK, "wait": _MYSQL_LOCK_WAIT_S}
    engine = sqlalchemy.create_engine(uri, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(take), args)
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text(give), args)
    finally:
        engine.dispose()


@contextlib.contextmanager
def _store_setup_locked(uri: str) -> Iterator[None]:
    """One process at a time on the store of ``uri``: a lock on a sqlite file's folder or on
    the database server; nothing for other stores (an MLflow server sets itself up)."""
    database = sqlite_file(uri)
    if database is not None:
        with _folder_locked(database.parent):
            yield
    else:
        with _database_locked(uri):
            yield


def open_store(uri: str) -> MlflowClient:
    """A client on ``uri`` with its store ready. A new database store is created (tables,
    migrations) by one process at a time: runs started together on a new sqlite file or
    PostgreSQL / MySQL database would otherwise race to build the same schema, and all but
    one fail. A new sqlite file is built beside its place and moved there whole, so a run
    killed meanwhile leaves no half-built store; a file that is not a store, or is one
    half-built by an older version, is a TrackingError saying what to do with it."""
    database = sqlite_file(uri)

    def locked_client() -> MlflowClient:
        with _store_setup_locked(uri):  # the client builds a missing schema as it starts
            if database is None:
                return MlflowClient(tracking_uri=uri)
            return _sqlite_client(uri, database)

    return call_with_retries("store set-up", locked_client, uri)


_BUILDING = ".building"  # suffix of a sqlite store being built beside its place


def _sqlite_client(uri: str, database: Path) -> MlflowClient:
    """A client on the sqlite file ``database`` (built first if new); run under the folder lock."""
    if not database.exists() or database.stat().st_size == 0:
        _build_sqlite_store(database)
    moved = f"move {database} away (a new store is then created) or set tracking.uri="
    with reading(database, "the MLflow store", f"it is not an SQLite database: {moved}"
                 "<another store>", TrackingError):
        runs = count_rows(database, "runs")["runs"] or 0
    try:
        return MlflowClient(tracking_uri=uri)
    except (MlflowException, DatabaseError) as exc:
        if is_transient(exc):
            raise
        if not runs:
            raise TrackingError(
                f"{database} is a half-built MLflow store holding no runs (its creation was "
                f"interrupted: {problem(exc)}); delete it and run again") from exc
        raise TrackingError(
            f"{database} holds {runs} run(s) but MLflow cannot open it ({problem(exc)}); back "
            f"it up, then try `mlflow db upgrade sqlite:///{database}`, or {moved}"
            "<another store>") from exc


def _build_sqlite_store(database: Path) -> None:
    """Create an MLflow store in a file beside ``database``, then move it there whole."""
    database.parent.mkdir(parents=True, exist_ok=True)
    for stale in database.parent.glob(f".{database.name}.*{_BUILDING}"):
        stale.unlink(missing_ok=True)  # left by a build that was killed (we hold the lock)
    tmp = database.parent / f".{database.name}.{uuid.uuid4().hex}{_BUILDING}"  # MLflow caches
    # a store per URI: a name used before would give back the store built in a deleted file
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # the umask's mode
    try:
        build_empty_store(tmp)
        if database.exists() and database.stat().st_size == 0:
            os.replace(tmp, database)
        else:
            try:
                os.link(tmp, database)  # never replaces a store that appeared meanwhile
            except FileExistsError:
                pass  # another process made it meanwhile: use that one
            except OSError:  # a file system without hard links: we hold the folder lock
                os.replace(tmp, database)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(database.parent)


def start_parent_run(uri: str, experiment: str, artifact_location: str | None, name: str,
                     tags: Mapping[str, str], configured: bool = False) -> str:
    """Create a sweep's parent run and return its id (``configured``: the artifact location
    is ``tracking.artifact_location``'s, not the default)."""
    check_reachable(uri)
    client = open_store(uri)
    exp_id = call_with_retries("experiment lookup", lambda: experiment_id(
        client, experiment, artifact_location, configured), uri)
    return call_with_retries("sweep run creation", lambda: client.create_run(
        exp_id, run_name=name, tags=dict(tags)).info.run_id, uri)


def restart_run(uri: str, run_id: str) -> None:
    """Mark ``run_id`` RUNNING again (a sweep re-run into its old directory)."""
    check_reachable(uri)
    client = MlflowClient(tracking_uri=uri)
    call_with_retries("sweep run restart", lambda: client.update_run(run_id, status="RUNNING"),
                      uri)


def experiment_of(uri: str, run_id: str) -> str:
    """The experiment id of ``run_id``."""
    client = MlflowClient(tracking_uri=uri)
    return call_with_retries("run lookup", lambda: client.get_run(run_id), uri).info.experiment_id


def child_run_ids(uri: str, experiment: str, parent_id: str, role_tag: str) -> list[str]:
    """The ids of the job runs under ``parent_id`` (runs with a ``role_tag`` left out)."""
    client = MlflowClient(tracking_uri=uri)
    found = call_with_retries("child run search", lambda: client.search_runs(
        [experiment], f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=1000), uri)
    return [r.info.run_id for r in found if role_tag not in r.data.tags]


def end_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    """Mark ``run_id`` terminated with ``status`` (retried: the jobs may have outlived a blip)."""
    client = MlflowClient(tracking_uri=uri)
    call_with_retries("sweep run end", lambda: client.set_terminated(run_id, status), uri)


def tag_run(uri: str, run_id: str, key: str, value: str | None) -> None:
    """Set tag ``key`` of ``run_id``; remove it when ``value`` is None."""
    client = MlflowClient(tracking_uri=uri)
    if value is not None:
        call_with_retries("run tag", lambda: client.set_tag(run_id, key, value), uri)
    elif key in call_with_retries("run lookup", lambda: client.get_run(run_id), uri).data.tags:
        call_with_retries("run tag removal", lambda: client.delete_tag(run_id, key), uri)


def kill_job_run(uri: str, parent_id: str, job: str, parent_tag: str, job_tag: str
                 ) -> tuple[str, str] | None:
    """Mark KILLED the RUNNING run of sweep job ``job`` (its ``job_tag``) under ``parent_id``;
    its id and its status before (a run that ended keeps it), or None when the job has no
    run yet."""
    client = MlflowClient(tracking_uri=uri)
    exp_id = call_with_retries("run lookup", lambda: client.get_run(parent_id),
                               uri).info.experiment_id
    query = f"tags.`{parent_tag}` = '{parent_id}' and tags.`{job_tag}` = '{job}'"
    runs = call_with_retries("job lookup", lambda: client.search_runs([exp_id], query), uri)
    if not runs:
        return None
    run_id = runs[0].info.run_id
    if runs[0].info.status == "RUNNING":
        call_with_retries("run end", lambda: client.set_terminated(run_id, "KILLED"), uri)
    return run_id, runs[0].info.status
