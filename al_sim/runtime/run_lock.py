"""One owner per run directory: an exclusive lock held for the whole run.

Two runs writing into one run dir (two launches in the same second share
Hydra's ``outputs/<date>/<time>/``) would mix their files and their MLflow
runs; the second is refused instead. The lock is an OS lock (``flock``): it
goes away with the process, however it ends, so a crash leaves no stale lock.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

from al_sim.runtime.errors import ConfigError

LOCK_FILE = ".al_sim.lock"


class OwnerLock:
    """An exclusive ``flock`` on a file that names its holder (``pid N``), never waited for."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file: IO[str] | None = None

    def _take(self) -> IO[str] | str:
        """The locked file, or the holder's description when another process holds it."""
        import fcntl

        handle = self.path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            return owner
        return handle

    def try_acquire(self) -> str | None:
        """Take the lock and name this process in it; the holder's description when taken."""
        handle = self._take()
        if isinstance(handle, str):
            return handle
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        self._file = handle
        return None

    def holder(self) -> str | None:
        """Who holds the lock now (None: nobody), without keeping it."""
        handle = self._take()
        if isinstance(handle, str):
            return handle
        handle.close()
        return None

    def release(self) -> None:
        """Let the next holder have it."""
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None


class RunDirLock(OwnerLock):
    """Holds ``<run_dir>/.al_sim.lock`` exclusively until :meth:`release` (or process exit)."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(Path(run_dir) / LOCK_FILE)

    def acquire(self) -> RunDirLock:
        """Take the lock; ConfigError naming the owner when another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        owner = self.try_acquire()
        if owner is not None:
            raise ConfigError(
                f"the run dir {self.path.parent} is in use by a running al_sim run ({owner}); "
                "give this run its own dir (hydra.run.dir=<new dir>), or wait for that run "
                "to end"
            )
        return self
