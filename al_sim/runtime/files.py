"""Files written whole or not at all: the one atomic-write helper every writer uses.

Guarantee: after :func:`atomic_write` returns, ``path`` holds the new content and
survives a crash or power loss (data fsynced, renamed over the old file, the
directory fsynced); if it raises or the process dies first, ``path`` keeps its old
content (or stays absent) and no temporary file is left behind by a raise.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def atomic_write(path: Path, content: str | bytes | memoryview | Callable[[IO[bytes]], object],
                 ) -> Path:
    """Write ``content`` (text as UTF-8, bytes, or a function writing to a binary file) to ``path``.

    The parent folder is created if missing. An ``OSError`` names ``path`` when the system's
    does not (a full disk fails a write, not an open).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode("utf-8") if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:  # a failed write or fsync names
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc  # no file
        raise
    fsync_dir(path.parent)
    return path


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where a folder cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
