"""Whether the kernel's out-of-memory killer ended processes while a sweep ran: the likely
cause of a local worker that died without a word (SIGKILL), said in its lost-job line."""

from __future__ import annotations

import contextlib
from pathlib import Path

VMSTAT = Path("/proc/vmstat")  # the kernel's event counters (oom_kill: Linux 4.13+)
FIX = ("run fewer or smaller jobs at once (hydra.launcher.n_jobs, dataset.image_size, "
       "trainer.batch_size)")


def oom_kills(vmstat: Path = VMSTAT) -> int | None:
    """Processes the OOM killer has ended on this machine since boot, a cgroup's limit
    (a container's, a SLURM job's) included; None where the kernel does not say."""
    with contextlib.suppress(OSError, ValueError):
        for line in vmstat.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
    return None


class OomWatch:
    """The OOM killer's count when made, to tell later whether it ended anything since."""

    def __init__(self, vmstat: Path = VMSTAT) -> None:
        self._vmstat = vmstat
        self._start = oom_kills(vmstat)

    def cause(self) -> str:
        """`` (the kernel's out-of-memory killer ended N process(es) ...; <fix>)`` when it
        ended any since this watch was made, else ``""``."""
        now = oom_kills(self._vmstat)
        if self._start is None or now is None or now <= self._start:
            return ""
        return (f" (the kernel's out-of-memory killer ended {now - self._start} process(es) "
                f"on this machine meanwhile: {FIX})")
