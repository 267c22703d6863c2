"""The files a dataset was read from, by content, so a run can tell when one changes under it.

A :class:`SourceFile` keeps a file's ``stat`` and a digest of its content taken when
the dataset was read (the MD5 a MedMNIST archive is checked with, a hash of each
image or label file). :func:`check_unchanged` compares the ``stat`` first (cheap,
every round); only a file whose ``stat`` moved is hashed again, and only a
changed content fails: a ``touch`` or ``chmod`` does not, a corrected copy with
an old modification time (``cp -p``, ``rsync -a``) does (its ctime or inode moved).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from al_sim.runtime.errors import DataError

_HASH_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """MD5 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _seen(path: Path) -> tuple[int, ...] | None:
    """What ``stat`` says of ``path`` (any write or replacement moves it); None: gone."""
    try:
        s = path.stat()
    except OSError:
        return None
    return (s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns)


@dataclass(frozen=True)
class SourceFile:
    """One file a dataset came from: its ``stat`` and content digest when it was read."""

    path: Path
    seen: tuple[int, ...] | None
    content: str
    digest: Callable[[Path], str] = file_digest

    @classmethod
    def of(cls, path: Path, content: str | None = None,
           digest: Callable[[Path], str] = file_digest) -> SourceFile:
        """``path`` as it is now (``content``: a digest the reader computed already)."""
        seen = _seen(path)  # before the digest: a write during it moves the stat again
        return cls(path, seen, digest(path) if content is None else content, digest)

    def changed(self) -> str | None:
        """How the file differs from when it was read (None: same content)."""
        now = _seen(self.path)
        if now is None:
            return "it was deleted or moved away"
        if now == self.seen:
            return None
        try:
            content = self.digest(self.path)
        except OSError as exc:
            return f"it cannot be read any more ({exc.strerror or exc})"
        return None if content == self.content else "its content is not what the run read"


def sources(paths: Iterable[Path]) -> list[SourceFile]:
    """:class:`SourceFile` of each existing file of ``paths``."""
    return [SourceFile.of(p) for p in paths if p.is_file()]


def check_unchanged(files: Sequence[SourceFile], when: str) -> None:
    """DataError naming the first file whose content changed since the dataset was read."""
    for source in files:
        how = source.changed()
        if how is not None:
            raise DataError(
                f"{source.path} changed while the run was using it ({how}; noticed {when}): "
                "the run's images and labels no longer match its data; leave a dataset's files "
                "alone while a run reads them, and start the run again on the new files "
                "(resume=false, or a new hydra.run.dir)")
