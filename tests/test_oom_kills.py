"""A local worker the kernel's OOM killer ended is said to be so in its lost-job line."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from al_sim.runtime.oom_kills import FIX, OomWatch, oom_counter, oom_kills

VMSTAT = "nr_free_pages 12345\noom_kill {}\nnr_zone_active_file 9\n"


def test_the_kernels_count_is_read_and_a_rise_is_said(tmp_path: Path) -> None:
    vmstat = tmp_path / "vmstat"
    vmstat.write_text(VMSTAT.format(4))
    assert oom_kills(vmstat) == 4
    watch = OomWatch(vmstat, cgroup=tmp_path / "no_cgroup")  # no cgroup: the machine's count
    assert watch.cause() == ""  # nothing ended since
    vmstat.write_text(VMSTAT.format(6))
    assert watch.cause() == (" (the kernel's out-of-memory killer ended 2 process(es) on this "
                             f"machine meanwhile: {FIX})")
    assert oom_kills(tmp_path / "none") is None  # no /proc: nothing said, nothing raised
    vmstat.write_text("nr_free_pages 1\n")  # a kernel before 4.13
    assert oom_kills(vmstat) is None
    assert OomWatch(vmstat, cgroup=tmp_path / "no_cgroup").cause() == ""


def test_a_local_submitit_job_killed_meanwhile_names_the_oom_killer(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason='pip install -e ".[slurm]"')
    from al_sim.app.launchers.submitit_jobs import AlLocalLauncher

    vmstat = tmp_path / "vmstat"
    vmstat.write_text(VMSTAT.format(0))
    launcher = AlLocalLauncher(submitit_folder=str(tmp_path))
    launcher._oom = OomWatch(vmstat, cgroup=tmp_path / "no_cgroup")
    job = SimpleNamespace(job_id="4242", state="FAILED", _process=SimpleNamespace(poll=lambda: -9))
    assert launcher._no_result(job) == ("local job 4242 ended with no result "
                                        "(FAILED, exit status -9)")
    vmstat.write_text(VMSTAT.format(1))
    assert launcher._no_result(job).endswith(
        "(FAILED, exit status -9) (the kernel's out-of-memory killer ended 1 process(es) on "
        f"this machine meanwhile: {FIX})")


@pytest.mark.parametrize(("cgroup", "counters"), [
    ("0::/user.slice/job\n", "user.slice/job/memory.events"),  # v2
    ("5:cpu:/\n4:memory:/docker/abc\n0::/\n", "memory/docker/abc/memory.oom_control")])  # v1
def test_the_launchers_memory_cgroup_is_counted_not_the_whole_machine(
        tmp_path: Path, cgroup: str, counters: str) -> None:
    """In a container or a job's cgroup, the machine's count (/proc/vmstat) rises with every
    other container's OOM kills: the launcher's own cgroup's count is read where there is one
    (its local workers are in it)."""
    (tmp_path / "cgroup").write_text(cgroup)
    vmstat = tmp_path / "vmstat"
    vmstat.write_text(VMSTAT.format(40))
    own = tmp_path / "sys" / counters
    own.parent.mkdir(parents=True)
    own.write_text("low 0\nunder_oom 0\noom 0\noom_kill 2\n")
    watch = OomWatch(vmstat, cgroup=tmp_path / "cgroup", sysfs=tmp_path / "sys")
    vmstat.write_text(VMSTAT.format(45))  # elsewhere on the machine: not ours
    assert watch.cause() == ""
    own.write_text("oom_kill 3\n")
    assert watch.cause() == (" (the kernel's out-of-memory killer ended 1 process(es) in this "
                             f"launcher's memory cgroup meanwhile: {FIX})")
    own.unlink()  # a cgroup file that is not there: the machine's count, not a failure
    counter = oom_counter(tmp_path / "cgroup", tmp_path / "sys", vmstat)
    assert counter is not None and counter.path == vmstat and counter.where == "on this machine"
