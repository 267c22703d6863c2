"""Retry with capped exponential back-off and a time budget, for a tracking store that blips.

A tracking server that restarts (a deploy, a database fail-over) or a SQLite
file locked by another job is a transient failure: the call is repeated after
0.5 s, 1 s, 2 s, ... (at most ``backoff_max_s``, with jitter so that many jobs
do not retry in lock-step) until it succeeds, ``retries`` retries were made,
or ``timeout_s`` seconds have passed. Anything else fails at once. Callers
pass calls that are safe to repeat (al_sim logs metrics with the timestamp and
step fixed before the first attempt, so a repeated batch is the same batch).
No MLflow here: the caller says which exceptions may be transient.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

# Lower-case fragments of the messages of failures that go away by themselves.
TRANSIENT = ("database is locked", "connection", "timed out", "timeout", "temporarily",
             "503", "502", "504", "429", "max retries exceeded", "reset by peer",
             "remote end closed", "server closed the connection", "broken pipe")


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep retrying a transient failure (see the module docstring)."""

    retries: int = 20
    timeout_s: float = 180.0
    backoff_s: float = 0.5
    backoff_max_s: float = 10.0

    def delays(self) -> list[float]:
        """The nominal waits before each retry (before jitter and the time budget)."""
        return [min(self.backoff_s * 2**i, self.backoff_max_s) for i in range(self.retries)]


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` looks like a store that is busy, restarting or unreachable."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    text = str(exc).lower()
    return any(fragment in text for fragment in TRANSIENT)


def retry(what: str, fn: Callable[[], T], policy: RetryPolicy,
          errors: tuple[type[BaseException], ...],
          sleep: Callable[[float], None] = time.sleep) -> T:
    """``fn()``; a transient ``errors`` failure is retried per ``policy``, the last re-raised."""
    deadline = time.monotonic() + policy.timeout_s
    for attempt, delay in enumerate([*policy.delays(), None]):
        try:
            return fn()
        except errors as exc:
            if delay is None or not is_transient(exc):
                raise
            wait = random.uniform(delay / 2, delay)  # jitter: jobs do not retry in lock-step
            if time.monotonic() + wait > deadline:
                raise
            log.warning("%s failed (attempt %d: %s); retrying in %.1fs", what, attempt + 1,
                        str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__, wait)
            sleep(wait)
    raise AssertionError("unreachable")  # the loop returns or raises
