"""Whether the kernel's out-of-memory killer ended processes while a sweep ran: the likely
cause of a local worker that died without a word (SIGKILL), said in its lost-job line.

The count is the launcher's memory cgroup's where the kernel keeps one (cgroup v2
``memory.events``, v1 ``memory.oom_control``: the processes of this cgroup that any OOM
killer ended, the local workers included), so kills in other containers or jobs on the
machine are not blamed; else the machine's (``/proc/vmstat``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from al_sim.runtime.cgroups import PROC_CGROUP, SYSFS, memory_cgroups

VMSTAT = Path("/proc/vmstat")  # the kernel's event counters (oom_kill: Linux 4.13+)
FIX = ("run fewer or smaller jobs at once (hydra.launcher.n_jobs, dataset.image_size, "
       "trainer.batch_size)")


def oom_kills(counters: Path = VMSTAT) -> int | None:
    """The ``oom_kill`` count of a kernel counters file (``name value`` lines: vmstat,
    memory.events, memory.oom_control); None where the kernel does not say."""
    with contextlib.suppress(OSError, ValueError):
        for line in counters.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
    return None


@dataclass(frozen=True)
class OomCounter:
    """Where the OOM kills are counted, and how a message names that place."""

    path: Path
    where: str

    def read(self) -> int | None:
        """The count now (None: unreadable)."""
        return oom_kills(self.path)


def oom_counter(cgroup: Path = PROC_CGROUP, sysfs: Path = SYSFS,
                vmstat: Path = VMSTAT) -> OomCounter | None:
    """This process's memory cgroup's OOM-kill counter, else the machine's; None if neither
    is there (no /proc, a kernel before 4.13)."""
    for found in memory_cgroups(cgroup, sysfs):
        counter = found.folder / found.name("memory.events", "memory.oom_control")
        if oom_kills(counter) is not None:
            return OomCounter(counter, "in this launcher's memory cgroup")
    return OomCounter(vmstat, "on this machine") if oom_kills(vmstat) is not None else None


class OomWatch:
    """The OOM killer's count when made, to tell later whether it ended anything since."""

    def __init__(self, vmstat: Path = VMSTAT, cgroup: Path = PROC_CGROUP,
                 sysfs: Path = SYSFS) -> None:
        self._counter = oom_counter(cgroup, sysfs, vmstat)
        self._start = None if self._counter is None else self._counter.read()

    def cause(self) -> str:
        """`` (the kernel's out-of-memory killer ended N process(es) ...; <fix>)`` when it
        ended any since this watch was made, else ``""``."""
        now = None if self._counter is None else self._counter.read()
        if self._counter is None or self._start is None or now is None or now <= self._start:
            return ""
        return (f" (the kernel's out-of-memory killer ended {now - self._start} process(es) "
                f"{self._counter.where} meanwhile: {FIX})")
