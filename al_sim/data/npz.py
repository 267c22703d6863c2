"""Arrays of an ``.npz`` archive read whole, or memory-mapped when they are large.

``np.load`` ignores ``mmap_mode`` for ``.npz`` members, so a 13.5 GB image
array would be read into memory. Here an array above a size threshold is
memory-mapped instead: a member stored uncompressed is mapped in place (at its
offset inside the zip file); a compressed member (the official MedMNIST files
are deflated) is decompressed once, in chunks, into a cache ``.npy`` file that
later runs map directly. Mapped arrays are read-only; pages are read from disk
when an image is used and the kernel can drop them again at any time, so
the process never holds the whole array.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import struct
import sys
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import numpy as np

from al_sim.runtime.errors import DataError
from al_sim.runtime.files import atomic_write
from al_sim.runtime.memory_cap import cgroup_memory_limit, status_bytes
from al_sim.runtime.reading import reading

try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]  # the module or None: checked before use

log = logging.getLogger(__name__)

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # the zip local file header (30 bytes)
_LOCAL_SIGNATURE = b"PK\x03\x04"
_REDOWNLOAD = "re-download the file"
_COPY_CHUNK = 16 << 20  # bytes decompressed per step when extracting a member
_MB = 1 << 20
AUTO_SHARE = 0.25  # auto: arrays above this share of the process's memory are memory-mapped
_FALLBACK_BUDGET = 8 << 30  # when the system says nothing about memory


@dataclass(frozen=True)
class Member:
    """Where one ``.npy`` member of an archive lies and what array it holds."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    header_len: int  # bytes of the .npy header before the data
    compressed: bool
    info: zipfile.ZipInfo

    @property
    def nbytes(self) -> int:
        """Size of the array's data."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def _read_header(f: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    return shape, fortran, dtype, f.tell()


def member(archive: zipfile.ZipFile, key: str, path: Path) -> Member:
    """The layout of array ``key``; DataError when it is missing, damaged, pickled or when its
    header claims more data than the archive holds."""
    try:
        info = archive.getinfo(f"{key}.npy")
    except KeyError as exc:
        raise DataError(f"{path} has no array {key!r}") from exc
    with reading(path, f"array {key!r}", _REDOWNLOAD), archive.open(info) as f:
        shape, fortran, dtype, header_len = _read_header(f)
    if dtype.hasobject:
        raise DataError(
            f"{path}: array {key!r} holds pickled Python objects; al_sim never loads pickles "
            "(allow_pickle=False): save the images and labels as plain integer arrays"
        )
    m = Member(key, tuple(shape), dtype, fortran, header_len,
               info.compress_type != zipfile.ZIP_STORED, info)
    held = info.file_size - header_len
    if held < m.nbytes:
        raise DataError(
            f"{path}: array {key!r} claims {' x '.join(map(str, m.shape)) or 'a scalar'} "
            f"{dtype} ({m.nbytes} bytes) but the archive holds {max(held, 0)} bytes of it; "
            f"the file is truncated or damaged: {_REDOWNLOAD}")
    return m


def _stored_offset(path: Path, m: Member) -> int:
    """File offset of the array data of an uncompressed member."""
    with path.open("rb") as f:
        f.seek(m.info.header_offset)
        fields = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
    if fields[0] != _LOCAL_SIGNATURE:
        raise DataError(f"{path}: the zip entry of {m.key!r} is damaged; re-download the file")
    name_len, extra_len = fields[9], fields[10]
    return m.info.header_offset + _LOCAL_HEADER.size + name_len + extra_len + m.header_len


def _map(path: Path, m: Member, offset: int) -> np.ndarray:
    order: Literal["C", "F"] = "F" if m.fortran_order else "C"
    if m.nbytes == 0:
        return np.empty(m.shape, dtype=m.dtype, order=order)
    return np.memmap(path, dtype=m.dtype, mode="r", offset=offset, shape=m.shape, order=order)


def cache_file(path: Path, key: str, cache_dir: Path | None) -> Path:
    """Where the extracted ``key`` of archive ``path`` is kept: ``<dir>/<stem>.<key>.npy``."""
    folder = path.parent / "al_sim_cache" if cache_dir is None else cache_dir
    return folder / f"{path.stem}.{key}.npy"


def _source_of(path: Path, m: Member) -> str:
    """What the cache of ``m`` was extracted from, by content: the member's CRC-32 (zipfile
    checks it on every extraction) and sizes, not the archive's modification time (a
    corrected copy made with ``cp -p`` or ``rsync -a`` keeps an older one)."""
    return json.dumps({"archive": path.name, "member": m.info.filename, "crc32": m.info.CRC,
                       "size": m.info.file_size, "compressed": m.info.compress_size})


def _stamp(cache: Path) -> Path:
    return cache.with_name(f"{cache.name}.source")


def _cache_is_current(cache: Path, archive: Path, m: Member) -> bool:
    try:
        if _stamp(cache).read_text() != _source_of(archive, m):
            return False  # extracted from other content (or by an older al_sim)
        stat = cache.stat()
        with cache.open("rb") as f:
            shape, fortran, dtype, header_len = _read_header(f)
    except (OSError, ValueError):
        return False
    return (tuple(shape), fortran, dtype) == (m.shape, m.fortran_order, m.dtype) and \
        stat.st_size == header_len + m.nbytes


_CACHE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def _extract(archive: zipfile.ZipFile, path: Path, m: Member, cache: Path) -> None:
    """Decompress member ``m`` (itself an ``.npy`` file) into ``cache``, atomically, then
    record what it came from."""
    writable = (f"set dataset.cache_dir= to a writable folder with {m.nbytes / _MB:.0f} MB "
                "free")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(cache.parent).free
    except OSError as exc:
        raise DataError(
            f"cannot create {cache.parent} to extract {m.key} of {path.name} ({exc}); "
            f"{writable}") from exc
    if free < m.info.file_size:
        raise DataError(
            f"{cache.parent} has {free / _MB:.0f} MB free but extracting {m.key} of {path.name} "
            f"needs {m.info.file_size / _MB:.0f} MB; set dataset.cache_dir= to a folder with room"
        )
    log.warning("%s: extracting %s (%.0f MB, compressed in the archive) once to %s so it can "
                "be memory-mapped; later runs reuse that file (delete it to free the space)",
                path.name, m.key, m.nbytes / _MB, cache)
    def copy(out: IO[bytes]) -> None:
        with archive.open(m.info) as src:
            shutil.copyfileobj(src, out, _COPY_CHUNK)  # zipfile checks the CRC at the end

    try:
        _stamp(cache).unlink(missing_ok=True)
        atomic_write(cache, copy)
        atomic_write(_stamp(cache), _source_of(path, m))
    except OSError as exc:
        if exc.errno in _CACHE_ERRNOS:
            raise DataError(f"cannot write the extraction cache {cache.parent} "
                            f"(dataset.cache_dir) for {m.key} of {path.name} ({exc.strerror}); "
                            f"{writable}") from exc
        raise


def memory_budget() -> int:
    """Bytes this process may still allocate: MemAvailable, lowered by what is left of
    RLIMIT_DATA / RLIMIT_AS and by a cgroup memory limit (each where the system exposes it)."""
    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for name, used in (("RLIMIT_DATA", "VmData"), ("RLIMIT_AS", "VmSize")):
        soft = resource.getrlimit(getattr(resource, name))[0] if resource else -1
        if soft not in (-1, getattr(resource, "RLIM_INFINITY", -1)):
            limits.append(max(0, soft - status_bytes(used)))  # what is left of the limit
    if (cgroup := cgroup_memory_limit()) is not None:
        limits.append(cgroup)
    return min(limits) if limits else _FALLBACK_BUDGET


def in_memory_max_bytes(in_memory_max_mb: float | None) -> int:
    """The size above which an array is memory-mapped: the setting, or auto (a share of
    :func:`memory_budget`)."""
    if in_memory_max_mb is None:
        return int(memory_budget() * AUTO_SHARE)
    return int(min(in_memory_max_mb * _MB, sys.maxsize))


def read_member(archive: zipfile.ZipFile, path: Path, key: str, in_memory_max_bytes: int,
                cache_dir: Path | None = None) -> np.ndarray:
    """Array ``key``: read whole up to ``in_memory_max_bytes``, memory-mapped above."""
    with reading(path, f"array {key!r}", _REDOWNLOAD):
        return _read_member(archive, path, key, in_memory_max_bytes, cache_dir)


def _read_member(archive: zipfile.ZipFile, path: Path, key: str, in_memory_max_bytes: int,
                 cache_dir: Path | None) -> np.ndarray:
    m = member(archive, key, path)
    if m.nbytes <= in_memory_max_bytes:
        with archive.open(m.info) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    if not m.compressed:
        log.info("%s: memory-mapping %s (%.0f MB) in place", path.name, key, m.nbytes / _MB)
        return _map(path, m, _stored_offset(path, m))
    cache = cache_file(path, key, cache_dir)
    if not _cache_is_current(cache, path, m):
        _extract(archive, path, m, cache)
    else:
        log.info("%s: memory-mapping %s from the extracted %s", path.name, key, cache)
    return np.load(cache, mmap_mode="r", allow_pickle=False)


Chunks = tuple[tuple[int, ...], np.dtype, Iterable[np.ndarray]]


def write_stored(path: Path, arrays: Mapping[str, np.ndarray | Chunks]) -> None:
    """Write an uncompressed ``.npz`` whose members can be memory-mapped in place.

    Each value is an array, or ``(shape, dtype, chunks)`` whose chunks (split
    along the first axis) are written one by one, so an archive larger than
    memory can be built.
    """
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, spec in arrays.items():
            chunks: Iterable[np.ndarray]
            if isinstance(spec, np.ndarray):
                shape, dtype, chunks = spec.shape, spec.dtype, [spec]
            else:
                shape, dtype, chunks = spec
            dtype = np.dtype(dtype)
            header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                      "shape": tuple(shape)}
            expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            written = 0
            with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_2_0(f, header)
                for chunk in chunks:
                    data = np.ascontiguousarray(chunk, dtype=dtype)
                    f.write(data.tobytes())
                    written += data.nbytes
            if written != expected:
                raise ValueError(f"{key}: chunks hold {written} bytes, shape {shape} needs "
                                 f"{expected}")
