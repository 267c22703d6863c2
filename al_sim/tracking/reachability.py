"""A tracking server's reachability, checked with one bounded HTTP request (a database
server's with one TCP connection). No mlflow import.

Connecting is not enough: a server (or a stuck proxy) may accept the TCP
connection and never answer, and MLflow's client then waits and retries for
minutes. One GET with a timeout tells, and MLflow's own HTTP client is bounded
by the same timeout (``MLFLOW_HTTP_REQUEST_TIMEOUT`` / ``_MAX_RETRIES``).
"""

from __future__ import annotations

import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from urllib.parse import urlparse

from al_sim.runtime.errors import TrackingError
from al_sim.tracking.contract import CLIENT_TOKEN_ENV, redact, sqlite_file

INVALID_HOST = "invalid host header"  # MLflow's security middleware refusing the URI's host name
HEALTH_PATH = "/health"  # MLflow's server answers it; any HTTP answer proves it is alive
CLIENT_RETRIES = 2  # MLflow HTTP client retries per request, once the server has answered
WAIT_FIRST_S, WAIT_MAX_S = 0.5, 5.0  # back-off while waiting for a restarting server
UNAUTHORIZED = 401
DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433}  # defaults


def bound_client(timeout: float) -> None:
    """Bound MLflow's HTTP client (unless the user set the variables): timeout, few retries."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, round(timeout))))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(CLIENT_RETRIES))


def check_writable_store(uri: str) -> None:
    """TrackingError, with the fix, when a local sqlite store's folder cannot be written."""
    db = sqlite_file(uri)
    if db is None:
        return
    folder = db.parent
    if not folder.is_dir():
        raise TrackingError(
            f"the folder of the MLflow store {db} does not exist; create it, set "
            "tracking.uri=sqlite:////<existing dir>/mlflow.db, or set tracking.enabled=false")
    if (db.exists() and not os.access(db, os.W_OK)) or (
            not db.exists() and not os.access(folder, os.W_OK)):
        raise TrackingError(
            f"cannot write the MLflow store {db} (read-only {'file' if db.exists() else 'folder'}"
            "); run from a writable folder, set tracking.uri=sqlite:////<writable dir>/mlflow.db, "
            "or set tracking.enabled=false"
        )


def check_reachable(uri: str, timeout: float = 10.0, wait_s: float = 0.0) -> None:
    """Fail fast, with the fix, when an http(s) tracking server does not answer in ``timeout`` s.

    ``wait_s`` > 0: keep asking (with back-off) that long first, for a server
    that is restarting while a job starts.
    """
    check_writable_store(uri)
    address = _database_address(uri)
    if urlparse(uri).scheme in ("http", "https"):
        bound_client(timeout)
        probe: Callable[[], None] = lambda: _answers(uri, timeout)  # noqa: E731
    elif address is not None:
        probe = lambda: _database_answers(uri, address, timeout)  # noqa: E731
    else:
        return
    deadline, delay = time.monotonic() + wait_s, WAIT_FIRST_S
    while True:
        try:
            return probe()
        except AccessRefusedError:
            raise  # it answered: waiting changes nothing
        except TrackingError:
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(2 * delay, WAIT_MAX_S)


def _answers(uri: str, timeout: float) -> None:
    parsed = urlparse(uri)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    url = f"{parsed.scheme}://{parsed.netloc}{parsed.path.rstrip('/')}{HEALTH_PATH}"
    token = os.environ.get(CLIENT_TOKEN_ENV)
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310 - http(s) only
            return
    except urllib.error.HTTPError as exc:
        if exc.code == UNAUTHORIZED:
            raise _unauthorized(uri, bool(token)) from None
        return  # it answered (an old server without /health, or a proxy's page)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        what = "did not answer within" if "timed out" in str(reason) else "cannot be reached in"
        raise TrackingError(
            f"the MLflow server at {redact(uri)} {what} {timeout:g} s ({reason}); start it "
            f"(mlflow server --host 127.0.0.1 --port {port}), fix tracking.uri, or set "
            "tracking.enabled=false"
        ) from None


class AccessRefusedError(TrackingError):
    """The server answered, refusing this client (no token, or the wrong one)."""


def _unauthorized(uri: str, sent: bool) -> TrackingError:
    """The error, naming the fix, of a server that asks for a token (401)."""
    what = (f"refused the token in {CLIENT_TOKEN_ENV}" if sent else "asks for a token")
    return AccessRefusedError(
        f"the MLflow server at {redact(uri)} {what} (401 Unauthorized); set {CLIENT_TOKEN_ENV} to "
        f"the server's token (python -m al_sim.server --dir <its dir> --token prints it; a "
        "server with MLflow's basic-auth takes MLFLOW_TRACKING_USERNAME and "
        "MLFLOW_TRACKING_PASSWORD), or set tracking.enabled=false")


def _database_address(uri: str) -> tuple[str, int] | None:
    """(host, port) of a database server named in ``uri``; None for any other store or a
    local socket."""
    parsed = urlparse(uri)
    default = DATABASE_PORTS.get(parsed.scheme.split("+", 1)[0])
    if default is None or not parsed.hostname:
        return None
    try:
        return parsed.hostname, parsed.port or default
    except ValueError:  # a port that is not a number: the driver names it
        return None


def _database_answers(uri: str, address: tuple[str, int], timeout: float) -> None:
    """TrackingError, with the fix, when the database server of ``uri`` at ``address`` takes
    no connection."""
    try:
        socket.create_connection(address, timeout=timeout).close()
    except OSError as exc:
        what = "did not answer within" if isinstance(exc, TimeoutError) else "cannot be reached in"
        raise TrackingError(
            f"the database server of tracking.uri={redact(uri)} {what} {timeout:g} s "
            f"({address[0]}:{address[1]}: {exc.strerror or exc}); start it, fix tracking.uri "
            "(or MLFLOW_TRACKING_URI), or set tracking.enabled=false"
        ) from None


def refused_host(uri: str, detail: str) -> TrackingError | None:
    """The error, naming the fix, when the server refused the host name of ``uri`` (403
    "Invalid Host header": ``mlflow server`` allows only localhost and private IP addresses
    unless told otherwise); None for any other failure."""
    if INVALID_HOST not in detail.lower():
        return None
    host = urlparse(uri).netloc.rpartition("@")[2]
    return TrackingError(
        f"the MLflow server at {redact(uri)} refuses the host name {host} (403 Invalid Host "
        f"header); start it with python -m al_sim.server --allowed-hosts {host} (or mlflow "
        "server --allowed-hosts), or use its IP address in tracking.uri"
    )
