"""Ctrl-C and SIGTERM as ``KeyboardInterrupt``, held back while a store write is under way.

A ``KeyboardInterrupt`` raised in the middle of an MLflow call can leave its
database connection inside a transaction that holds SQLite's write lock: every
later write of the same process (the run's KILLED status, its ``error`` tag)
then waits on "database is locked" until the retries give up, and so do other
jobs writing to the same store. Signal handlers therefore call :func:`interrupt`,
which raises at once unless the main thread is inside :func:`deferred`; there it
is remembered and raised when the call returns.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_depth = [0]  # deferred() nesting in the main thread
_pending: list[str] = []


def interrupt(reason: str) -> None:
    """From a signal handler: raise ``KeyboardInterrupt(reason)`` now, or when the
    store call under way returns."""
    if _depth[0]:
        _pending[:] = [reason]
        return
    raise KeyboardInterrupt(reason)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A store call that an interrupt must not cut in two (main thread; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _depth[0] += 1
    try:
        yield
    finally:
        _depth[0] -= 1
        if not _depth[0] and _pending:
            raise KeyboardInterrupt(_pending.pop())
