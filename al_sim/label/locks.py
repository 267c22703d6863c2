"""Who may write a batch's answers: one page server per batch, one writer at a time.

Both are OS locks (``flock``) on files in the batch folder; they go away with
the process, however it ends. ``.server.lock`` is held by a labelling page for
its whole life (a second page on the same batch is refused); ``.answers.lock``
is held for each read-merge-write of ``answers.csv``, so a page, an import and
another page never lose each other's answers.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from al_sim.runtime.errors import LabelError

SERVER_LOCK, ANSWERS_LOCK = ".server.lock", ".answers.lock"


class ServerLock:
    """Held by the one labelling page of a batch (``<batch>/.server.lock``)."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / SERVER_LOCK
        self._file: IO[str] | None = None

    def _take(self) -> IO[str] | str:
        """The locked file, or the owner's description when another process holds it."""
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            return owner
        return handle

    def acquire(self) -> ServerLock:
        """Take the lock; LabelError naming the owner when another page holds it."""
        handle = self._take()
        if isinstance(handle, str):
            raise LabelError(
                f"a labelling page for {self.path.parent} is already open ({handle}): two "
                "pages would overwrite each other's answers; use that page, or stop it "
                "(Ctrl-C in its terminal) and start this one again")
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        """Let another page open the batch."""
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None

    def check_free(self) -> None:
        """LabelError when a page has the batch open (the run is about to replace it)."""
        if not self.path.parent.is_dir():
            return
        handle = self._take()
        if isinstance(handle, str):
            raise LabelError(
                f"a labelling page has {self.path.parent} open ({handle}) but the run needs "
                "to replace that batch; stop the page (Ctrl-C in its terminal), then run the "
                "same command again")
        handle.close()


@contextmanager
def writing(folder: Path) -> Iterator[None]:
    """Exclusive use of ``<folder>/answers.csv`` for one read-merge-write (waits its turn)."""
    with (Path(folder) / ANSWERS_LOCK).open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield  # the lock goes with the file's close
