"""The tracking retry policy: transient failures are retried with capped back-off, others not."""

from __future__ import annotations

import pytest

from al_sim.runtime.errors import TrackingError
from al_sim.tracking.retry import RetryPolicy, is_transient, retry


class Flaky:
    """Fails ``times`` times with ``exc``, then returns 42."""

    def __init__(self, times: int, exc: Exception) -> None:
        self.times, self.exc, self.calls = times, exc, 0

    def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.times:
            raise self.exc
        return 42


def test_a_server_down_for_a_while_is_waited_for_with_capped_backoff() -> None:
    waits: list[float] = []
    fn = Flaky(6, ConnectionRefusedError(111, "Connection refused"))
    policy = RetryPolicy(retries=10, timeout_s=1e9, backoff_s=0.5, backoff_max_s=4)
    assert retry("log", fn, policy, (OSError,), sleep=waits.append) == 42
    assert fn.calls == 7 and len(waits) == 6
    nominal = [0.5, 1, 2, 4, 4, 4]  # doubling, capped at backoff_max_s
    assert all(n / 2 <= w <= n for w, n in zip(waits, nominal, strict=True))  # jittered


def test_a_non_transient_error_is_not_retried() -> None:
    fn = Flaky(1, ValueError("INVALID_PARAMETER_VALUE: bad metric name"))
    with pytest.raises(ValueError):
        retry("log", fn, RetryPolicy(), (ValueError,), sleep=lambda s: None)
    assert fn.calls == 1


def test_it_gives_up_after_retries_or_past_the_time_budget() -> None:
    fn = Flaky(100, OSError("database is locked"))
    with pytest.raises(OSError):
        retry("log", fn, RetryPolicy(retries=3, timeout_s=1e9), (OSError,), sleep=lambda s: None)
    assert fn.calls == 4
    fn = Flaky(100, OSError("503 Service Unavailable"))
    with pytest.raises(OSError):  # the first wait (>= 0.25 s) would pass the 0.1 s budget
        retry("log", fn, RetryPolicy(retries=50, timeout_s=0.1), (OSError,),
              sleep=lambda s: None)
    assert fn.calls == 1


@pytest.mark.parametrize("message", ["Connection refused", "Read timed out",
                                     "Max retries exceeded with url", "502 Bad Gateway",
                                     "database is locked", "Connection reset by peer"])
def test_restarting_and_locked_stores_count_as_transient(message: str) -> None:
    assert is_transient(RuntimeError(message))


def test_the_writer_turns_a_persistent_outage_into_one_error_line() -> None:
    from mlflow.exceptions import MlflowException

    from al_sim.tracking.store import call_with_retries

    fn = Flaky(100, MlflowException("API request failed: Connection refused"))
    with pytest.raises(TrackingError, match="resumes from its checkpoint"):
        call_with_retries("metric logging", fn, "http://127.0.0.1:9",
                          RetryPolicy(retries=2, timeout_s=30, backoff_s=0.01))
    assert fn.calls == 3


def test_mlflow_tracebacks_of_store_errors_are_dropped_for_one_line_that_says_the_fix(
        caplog: pytest.LogCaptureFixture, tmp_path) -> None:
    """A full disk under a sqlite store: MLflow logs a traceback per failed call (16 in one
    run); al_sim says the error once, with the store's file and what to do."""
    import logging

    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import OperationalError

    from al_sim.tracking.store import call_with_retries

    logger = logging.getLogger("mlflow.store.db.utils")

    def write(message: str) -> None:  # what mlflow.store.db.utils.make_managed_session does
        try:
            raise OperationalError("UPDATE runs", {}, Exception(message))
        except OperationalError as exc:
            logger.exception("SQLAlchemy database error. The following exception is caught.")
            raise MlflowException(f"(raised as a result of Query-invoked autoflush; ...)\n{exc}") \
                from exc

    for message in ("database is locked", "no such table: runs", "database or disk is full"):
        with pytest.raises(TrackingError) as err:
            call_with_retries("run end", lambda m=message: write(m),
                              f"sqlite:///{tmp_path / 'mlflow.db'}", RetryPolicy(retries=0))
        assert f"(builtins.Exception) {message}" in str(err.value)  # the cause, not the note
    assert [r for r in caplog.records if r.name == logger.name] == []
    assert f"free space on the disk holding {tmp_path / 'mlflow.db'}" in str(err.value)


def test_an_interrupt_waits_for_the_store_call_under_way() -> None:
    from al_sim.runtime.interrupts import deferred, interrupt
    from al_sim.tracking.store import call_with_retries

    done: list[str] = []

    def write() -> str:
        interrupt("SIGTERM")  # as the signal handler would, mid-call
        done.append("committed")
        return "ok"

    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        call_with_retries("metric logging", write, "sqlite:///x.db")
    assert done == ["committed"]  # the call finished before the interrupt was raised
    with pytest.raises(KeyboardInterrupt, match="Ctrl-C"):
        interrupt("Ctrl-C")  # outside a store call: at once
    with deferred():
        pass  # nothing pending: nothing raised


@pytest.mark.parametrize(("uri", "expected"), [
    ("sqlite:///mlflow.db", "mlflow.db"),            # relative: to the working directory
    ("sqlite:////abs/dir/store.db", "/abs/dir/store.db"),
    ("sqlite://", None),                              # in memory: nothing to lock
    ("postgresql://u@127.0.0.1:5432/mlflow", None),
    ("http://127.0.0.1:5000", None),
])
def test_the_store_file_locked_while_a_new_sqlite_schema_is_built(uri, expected, monkeypatch,
                                                                  tmp_path) -> None:
    from al_sim.tracking.contract import sqlite_file

    monkeypatch.chdir(tmp_path)
    got = sqlite_file(uri)
    want = None if expected is None else (tmp_path / expected).resolve()
    assert got == want


@pytest.mark.parametrize(("text", "shown"), [
    ("postgresql+psycopg2://mlflow:s3cret@127.0.0.1:5432/mlflow",
     "postgresql+psycopg2://mlflow:***@127.0.0.1:5432/mlflow"),
    ("uri: http://user:p%40ss@host:5000/x and mysql://a:b@h/db",
     "uri: http://user:***@host:5000/x and mysql://a:***@h/db"),
    ("sqlite:////abs/mlflow.db", "sqlite:////abs/mlflow.db"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("http://user@host:5000", "http://user@host:5000"),
])
def test_passwords_in_tracking_uris_are_never_shown(text: str, shown: str) -> None:
    from al_sim.tracking.contract import redact

    assert redact(text) == shown
