"""A process's memory capped below what the machine (or its cgroup) has, so that a run asking
for too much gets an allocation failure, which ends it with one ``error:`` line and its MLflow
run FAILED, instead of the kernel's OOM killer ending it with no word and the run RUNNING."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from al_sim.runtime.cgroups import PROC_CGROUP, SYSFS, memory_cgroups
from al_sim.runtime.errors import ConfigError

try:
    import resource
except ImportError:  # not on Windows: no cap there
    resource = None  # type: ignore[assignment]  # the module or None: checked before use

_lock = threading.Lock()
_holders = 0  # runs of this process inside memory_cap (a lock-step stack's members share one)
_saved: tuple[int, int] | None = None
_UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a page-rounded 2**63 - 1
_MB = 2**20
# oneDNN's only word when it cannot allocate a convolution's kernel or scratch memory
_ONEDNN_FAILED = "could not create a primitive"


def memory_available_to_process() -> int:
    """Bytes of memory this process may use: the machine's RAM, or its cgroup's limit if lower
    (a SLURM job's ``--mem``, a container's memory limit)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = cgroup_memory_limit()
    return total if limit is None else min(total, limit)


def cgroup_memory_limit(proc_cgroup: Path = PROC_CGROUP, root: Path = SYSFS) -> int | None:
    """The lowest memory limit of this process's cgroup and its ancestors, or None: cgroup v2's
    ``memory.max``, v1's ``memory.limit_in_bytes`` ("max" and v1's "unlimited", a number near
    2**63, are no limit)."""
    limits = []
    for cgroup in memory_cgroups(proc_cgroup, root):
        name = cgroup.name("memory.max", "memory.limit_in_bytes")
        for folder in cgroup.up_to_root():
            with contextlib.suppress(OSError, ValueError):
                text = (folder / name).read_text().strip()
                if text != "max" and int(text) < _UNLIMITED:
                    limits.append(int(text))
    return min(limits) if limits else None


def status_bytes(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmData``, ``VmSize``) in bytes; 0 where the
    system has none."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def memory_cap(fraction: float | None) -> Iterator[None]:
    """Within: the process's data size (``RLIMIT_DATA``) capped at ``fraction`` of the memory
    available to it (never raised above a lower limit already set); the previous limit is
    restored when the last run inside leaves. ``None``: no cap. A cap at or below what the
    process holds already is a ConfigError (nothing could be allocated under it). oneDNN's
    failure to create a primitive under the cap is a MemoryError that says so."""
    global _holders, _saved
    if fraction is None or resource is None:
        yield
        return
    with _lock:
        if _holders == 0:
            soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
            available = memory_available_to_process()
            cap = int(available * fraction)
            for limit in (soft, hard):
                if limit != resource.RLIM_INFINITY:
                    cap = min(cap, limit)
            held = status_bytes("VmData")
            if cap <= held:  # every allocation would fail, the run's error report included
                raise ConfigError(
                    f"trainer.memory_limit_fraction={fraction} caps this run's data at "
                    f"{cap / _MB:.0f} MB (of the {available / _MB:.0f} MB it may use), less than "
                    f"the {held / _MB:.0f} MB the process holds already (VmData: its libraries "
                    "and data, reserved or used); raise trainer.memory_limit_fraction, give the "
                    "job more memory, or set trainer.memory_limit_fraction=null")
            resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
            _saved = (soft, hard)
        _holders += 1
    try:
        yield
    except RuntimeError as exc:
        if _ONEDNN_FAILED not in str(exc):
            raise
        cap_mb = resource.getrlimit(resource.RLIMIT_DATA)[0] / _MB
        raise MemoryError(f"oneDNN {_ONEDNN_FAILED} under the {cap_mb:.0f} MB memory cap "
                          f"(trainer.memory_limit_fraction={fraction})") from exc
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _saved is not None:
                resource.setrlimit(resource.RLIMIT_DATA, _saved)
                _saved = None
