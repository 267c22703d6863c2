"""The reader boundary: any failure while reading a user's file becomes one clear error.

Every reader of a user's file (images, ``.npz`` archives and their members, CSV
label files, the MLflow store) enters through :func:`reading`, so a failure
raised anywhere underneath (Pillow's decompression-bomb guard or truncated data,
numpy's header and memory-map errors, SQLite's "file is not a database", ...)
reaches the user as one ``DataError`` (or the ``error`` class given) naming the
file, the part read, the problem and the fix. al_sim's own errors pass through
unchanged, and so does running out of memory (its message names the knobs).
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable, Iterator
from pathlib import Path

from al_sim.runtime.errors import ALSimError, DataError, out_of_memory

_PROBLEM_CHARS = 300  # a library's message is cut here (some quote whole headers)
REPLACE = "replace the file with a valid copy (or re-download it)"


class MalformedError(ValueError):
    """A file that parsed but holds what al_sim refuses (e.g. NaN pixels); said as is."""


def problem(exc: BaseException) -> str:
    """``exc`` in a few words: the first line of its message, after its type unless it is
    al_sim's own."""
    text = (str(exc).strip().splitlines() or [""])[0][:_PROBLEM_CHARS]
    if isinstance(exc, MalformedError | ALSimError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# The file itself cannot be opened: no valid copy helps, the path or its permissions do.
_PATH_ERRNOS = (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR)
UNOPENED = "check that the file is there and that this user can read it"


def fix_for(exc: BaseException, fix: str) -> str:
    """``fix``, unless ``exc`` says the file could not be opened at all (then: the path)."""
    return UNOPENED if isinstance(exc, OSError) and exc.errno in _PATH_ERRNOS else fix


@contextlib.contextmanager
def reading(path: Path | str, what: str, fix: str = REPLACE,
            error: type[ALSimError] = DataError) -> Iterator[None]:
    """Read ``what`` of ``path`` inside this block; a failure becomes one ``error``.

    The message reads ``<path>: cannot read <what> (<problem>); <fix>``.
    """
    try:
        yield
    except ALSimError:
        raise
    except Exception as exc:
        if out_of_memory(exc) is not None:
            raise
        raise error(f"{path}: cannot read {what} ({problem(exc)}); {fix_for(exc, fix)}") \
            from exc


class Unreadable:
    """Failures collected over many files, raised together as one DataError by :meth:`check`."""

    def __init__(self, fix: str) -> None:
        self.fix = fix
        self.problems: list[str] = []

    @contextlib.contextmanager
    def reading(self, path: Path | str) -> Iterator[None]:
        """As :func:`reading`, but the failure is kept (with its path) and the caller goes on."""
        try:
            yield
        except Exception as exc:
            if out_of_memory(exc) is not None:
                raise
            text = problem(exc)
            name = Path(path).name
            if name and f"{name}: " in text[:_PROBLEM_CHARS // 2]:  # the message leads with
                text = text.split(f"{name}: ", 1)[1]                # the path shown already
            self.problems.append(f"{path} ({text})")

    def check(self, what: str, listing: Callable[[list[str]], str] = ", ".join) -> None:
        """DataError ``<n> <what> cannot be read: <problems>; <fix>`` if anything failed."""
        if self.problems:
            shown = listing(self.problems)
            raise DataError(f"{len(self.problems)} {what} cannot be read: {shown}; {self.fix}")
