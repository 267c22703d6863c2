"""Who may write a batch's answers: one page server per batch, one writer at a time.

Both are OS locks (``flock``) on files in the batch folder; they go away with
the process, however it ends. ``.server.lock`` is held by a labelling page for
its whole life (a second page on the same batch is refused); ``.answers.lock``
is held for each read-merge-write of ``answers.csv``, so a page, an import and
another page never lose each other's answers.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from al_sim.runtime.errors import LabelError
from al_sim.runtime.run_lock import OwnerLock

SERVER_LOCK, ANSWERS_LOCK = ".server.lock", ".answers.lock"


class ServerLock(OwnerLock):
    """Held by the one labelling page of a batch (``<batch>/.server.lock``)."""

    def __init__(self, folder: Path) -> None:
        super().__init__(Path(folder) / SERVER_LOCK)

    def acquire(self) -> ServerLock:
        """Take the lock; LabelError naming the owner when another page holds it."""
        owner = self.try_acquire()
        if owner is not None:
            raise LabelError(
                f"a labelling page for {self.path.parent} is already open ({owner}): two "
                "pages would overwrite each other's answers; use that page, or stop it "
                "(Ctrl-C in its terminal) and start this one again")
        return self

    def check_free(self) -> None:
        """LabelError when a page has the batch open (the run is about to replace it)."""
        if not self.path.parent.is_dir():
            return
        owner = self.holder()
        if owner is not None:
            raise LabelError(
                f"a labelling page has {self.path.parent} open ({owner}) but the run needs "
                "to replace that batch; stop the page (Ctrl-C in its terminal), then run the "
                "same command again")


@contextmanager
def writing(folder: Path) -> Iterator[None]:
    """Exclusive use of ``<folder>/answers.csv`` for one read-merge-write (waits its turn)."""
    with (Path(folder) / ANSWERS_LOCK).open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield  # the lock goes with the file's close
