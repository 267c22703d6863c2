"""A process's memory capped below what the machine (or its cgroup) has, so that a run asking
for too much gets an allocation failure, which ends it with one ``error:`` line and its MLflow
run FAILED, instead of the kernel's OOM killer ending it with no word and the run RUNNING."""

from __future__ import annotations

import contextlib
import os
import resource
import threading
from collections.abc import Iterator
from pathlib import Path

_lock = threading.Lock()
_holders = 0  # runs of this process inside memory_cap (a lock-step stack's members share one)
_saved: tuple[int, int] | None = None


def memory_available_to_process() -> int:
    """Bytes of memory this process may use: the machine's RAM, or its cgroup's limit if lower
    (a SLURM job's ``--mem``, a container's memory limit)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = cgroup_memory_limit()
    return total if limit is None else min(total, limit)


def cgroup_memory_limit(proc_cgroup: Path = Path("/proc/self/cgroup"),
                        root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The cgroup v2 ``memory.max`` of this process and its ancestors (the lowest), or None."""
    with contextlib.suppress(OSError, ValueError):
        for line in proc_cgroup.read_text().splitlines():
            if line.startswith("0::"):
                group = root / line[3:].strip().lstrip("/")
                limits = []
                for folder in [group, *group.parents]:
                    with contextlib.suppress(OSError, ValueError):
                        text = (folder / "memory.max").read_text().strip()
                        if text != "max":
                            limits.append(int(text))
                    if folder == root:
                        break
                return min(limits) if limits else None
    return None


@contextlib.contextmanager
def memory_cap(fraction: float | None) -> Iterator[None]:
    """Within: the process's data size (``RLIMIT_DATA``) capped at ``fraction`` of the memory
    available to it (never raised above a lower limit already set); the previous limit is
    restored when the last run inside leaves. ``None``: no cap."""
    global _holders, _saved
    if fraction is None:
        yield
        return
    with _lock:
        if _holders == 0:
            soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
            cap = int(memory_available_to_process() * fraction)
            for limit in (soft, hard):
                if limit != resource.RLIM_INFINITY:
                    cap = min(cap, limit)
            resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
            _saved = (soft, hard)
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _saved is not None:
                resource.setrlimit(resource.RLIMIT_DATA, _saved)
                _saved = None
