"""Where this process's memory cgroup lives: the one reader of ``/proc/self/cgroup`` for the
memory cap's limit (:mod:`al_sim.runtime.memory_cap`) and the OOM killer's count
(:mod:`al_sim.runtime.oom_kills`)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

PROC_CGROUP = Path("/proc/self/cgroup")  # this process's cgroups, one line per hierarchy
SYSFS = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class MemoryCgroup:
    """One hierarchy's memory cgroup of this process: its folder and that hierarchy's root
    (v2: the unified one; v1: the memory controller's)."""

    folder: Path
    root: Path
    version: int

    def name(self, v2: str, v1: str) -> str:
        """A control file's name in this hierarchy: ``v2`` in the unified one, else ``v1``."""
        return v2 if self.version == 2 else v1

    def up_to_root(self) -> list[Path]:
        """The folder, then each ancestor up to the hierarchy's root (limits nest)."""
        return [self.folder, *[p for p in self.folder.parents if p.is_relative_to(self.root)]]


def memory_cgroups(proc_cgroup: Path = PROC_CGROUP, sysfs: Path = SYSFS) -> list[MemoryCgroup]:
    """This process's memory cgroups: the v2 one and/or v1's memory controller's (a hybrid
    system has both lines); empty where ``/proc`` does not say."""
    found = []
    with contextlib.suppress(OSError):
        for line in proc_cgroup.read_text().splitlines():
            number, controllers, path = (line.split(":", 2) + ["", ""])[:3]
            folder = path.strip().lstrip("/")
            if number == "0" and controllers == "":
                found.append(MemoryCgroup(sysfs / folder, sysfs, 2))
            elif "memory" in controllers.split(","):
                found.append(MemoryCgroup(sysfs / "memory" / folder, sysfs / "memory", 1))
    return found
