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

import _thread
import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

_depth = [0]  # deferred() nesting in the main thread
_pending: list[str] = []
REARM_S = 0.01  # a dropped interrupt is raised again this long after
_lost: list[str] = []  # an interrupt raised where Python drops exceptions (a finalizer)


def interrupt(reason: str) -> None:
    """From a signal handler: raise ``KeyboardInterrupt(reason)`` now, or when the
    store call under way returns (a lost interrupt's reason first)."""
    _guard_finalizers()
    if _lost:
        reason = _lost.pop()
    if _depth[0]:
        _pending[:] = [reason]
        return
    raise KeyboardInterrupt(reason)


def lost() -> bool:
    """Whether an interrupt was dropped by a finalizer and is being raised again."""
    return bool(_lost)


def _unraisable(info: Any) -> None:
    """A signal that lands in a finalizer or a weakref callback (garbage collection, any
    library's) raises there, where Python prints "Exception ignored" and drops it: the stop
    would be lost. Raise it again in the main thread, silently."""
    if isinstance(info.exc_value, KeyboardInterrupt):
        _lost[:] = [str(info.exc_value)]
        # from another thread, a moment later: raised now, it would land in this hook (or
        # still in the finalizer) and be dropped again; if it is, this runs again
        rearm = threading.Timer(REARM_S, _thread.interrupt_main)
        rearm.daemon = True
        rearm.start()  # the SIGINT handler runs again and calls interrupt()
        return
    (_previous[0] if _previous else sys.__unraisablehook__)(info)


_previous: list[Any] = []  # the unraisable hook before ours


def _guard_finalizers() -> None:
    """Install :func:`_unraisable` (once), before an interrupt is raised: only a process
    whose signal handlers call :func:`interrupt` gets it, not every program importing
    al_sim."""
    if sys.unraisablehook is not _unraisable:
        _previous[:] = [sys.unraisablehook]
        sys.unraisablehook = _unraisable


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
