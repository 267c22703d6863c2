"""A CPU run capped below the machine's memory (``trainer.memory_limit_fraction``): asking for
too much is an allocation failure, one ``error:`` line and a FAILED run, not the OOM killer."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from al_sim.runtime.errors import ConfigError
from al_sim.runtime.memory_cap import cgroup_memory_limit, memory_available_to_process, memory_cap
from tests import fork_server
from tests.conftest import (
    FAST_CLI,
    REPO,
    all_experiments,
    assert_failed_runs_only,
    assert_refused,
    cli_env,
    refusal,
)

MB = 2**20


def vm_data() -> int:
    """This process's data size in bytes (what RLIMIT_DATA counts)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmData")


def fraction_leaving(headroom: int) -> float:
    return (vm_data() + headroom) / memory_available_to_process()


def test_an_allocation_past_the_cap_fails_and_the_limit_comes_back() -> None:
    before = resource.getrlimit(resource.RLIMIT_DATA)
    fraction = fraction_leaving(200 * MB)
    with memory_cap(fraction):
        soft, _ = resource.getrlimit(resource.RLIMIT_DATA)
        assert soft == int(memory_available_to_process() * fraction)
        with memory_cap(0.99):  # a second run of the process (a lock-step stack) shares it
            assert resource.getrlimit(resource.RLIMIT_DATA)[0] == soft
        assert resource.getrlimit(resource.RLIMIT_DATA)[0] == soft  # the first still runs
        with pytest.raises(MemoryError):
            np.ones(400 * MB, dtype=np.uint8)
        np.ones(20 * MB, dtype=np.uint8)  # below the cap: fine
    assert resource.getrlimit(resource.RLIMIT_DATA) == before
    with memory_cap(None):
        assert resource.getrlimit(resource.RLIMIT_DATA) == before


def test_a_lower_limit_already_set_is_kept() -> None:
    before = resource.getrlimit(resource.RLIMIT_DATA)
    low = vm_data() + 500 * MB
    resource.setrlimit(resource.RLIMIT_DATA, (low, before[1]))
    try:
        with memory_cap(1.0):
            assert resource.getrlimit(resource.RLIMIT_DATA)[0] == low
        assert resource.getrlimit(resource.RLIMIT_DATA)[0] == low
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, before)


def test_the_cgroup_limit_is_the_lowest_of_the_process_groups(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    job = root / "slurm" / "job_7"
    job.mkdir(parents=True)
    (root / "slurm" / "memory.max").write_text("8589934592\n")
    (job / "memory.max").write_text("max\n")
    proc = tmp_path / "proc_cgroup"
    proc.write_text("0::/slurm/job_7\n")
    assert cgroup_memory_limit(proc, root) == 8 * 2**30
    (job / "memory.max").write_text(f"{2**30}\n")
    assert cgroup_memory_limit(proc, root) == 2**30
    proc.write_text("12:memory:/old/v1/layout\n")  # cgroup v1, its files absent: no limit
    assert cgroup_memory_limit(proc, root) is None
    v1 = root / "memory" / "slurm" / "uid_0" / "job_8"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(f"{3 * 2**30}\n")
    (v1.parent / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # unlimited
    proc.write_text("4:cpu,cpuacct:/slurm/uid_0/job_8\n3:memory:/slurm/uid_0/job_8\n")
    assert cgroup_memory_limit(proc, root) == 3 * 2**30
    # hybrid: a v2 line without a limit and v1's memory controller with one
    proc.write_text("3:memory:/slurm/uid_0/job_8\n0::/slurm/job_7\n")
    assert cgroup_memory_limit(proc, root) == 2**30  # the lowest of both


def test_the_pools_memory_budget_reads_the_same_cgroup_limit(monkeypatch) -> None:
    """A SLURM job's limit sits in the job's own cgroup, not at the hierarchy's root: the
    auto in-memory threshold of a pool and the run's cap read it one way."""
    from al_sim.data import npz

    monkeypatch.setattr(npz, "cgroup_memory_limit", lambda: 300 * MB)
    assert npz.memory_budget() == 300 * MB


def test_a_cap_below_what_the_process_holds_is_one_config_error(tmp_path: Path) -> None:
    """A 1 GB SLURM job with the default 0.9: every allocation would fail, the error report's
    too (a run hung so); refused before the cap is set, naming the knob and the sizes."""
    before = resource.getrlimit(resource.RLIMIT_DATA)
    fraction = vm_data() / 2 / memory_available_to_process()
    with (pytest.raises(ConfigError, match=r"less than the \d+ MB the process holds already"),
          memory_cap(fraction)):
        pass
    assert resource.getrlimit(resource.RLIMIT_DATA) == before
    line = refusal(["budget=tiny", *FAST_CLI, "trainer.memory_limit_fraction=0.0001"], tmp_path)
    assert line.startswith("error: trainer.memory_limit_fraction=0.0001 caps this run"), line
    assert "trainer.memory_limit_fraction=null" in line
    assert_failed_runs_only(tmp_path)
    assert resource.getrlimit(resource.RLIMIT_DATA) == before


def test_threads_first_needed_under_the_cap_abort_nothing_and_break_no_convolution() -> None:
    """In a new process, torch's OpenMP threads do not exist yet. Started under a cap that
    leaves no room for their stacks, libgomp ended the process (``Thread creation failed``,
    no error line, the run left RUNNING) or every later convolution failed with oneDNN's
    ``could not create a primitive`` (reported as images too small for the model). The run
    starts them before its cap: what fails is the allocation, as an out-of-memory error."""
    script = textwrap.dedent("""
        import torch
        from al_sim.core.device import start_threads
        from al_sim.runtime.memory_cap import memory_available_to_process, memory_cap, status_bytes
        torch.set_num_threads(2)
        start_threads(2)
        conv = torch.nn.Conv2d(1, 16, 3, padding=1)
        fraction = (status_bytes("VmData") + 5 * 2**20) / memory_available_to_process()
        with torch.no_grad():
            with memory_cap(fraction):  # 5 MB left: a thread stack (8 MB) would not fit
                try:
                    conv(torch.zeros(2, 1, 512, 512))
                except RuntimeError as exc:
                    print("under the cap:", str(exc).splitlines()[0])
            print("after:", tuple(conv(torch.zeros(2, 1, 512, 512)).shape))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "can't allocate memory" in proc.stdout, proc.stdout
    assert "after: (2, 16, 512, 512)" in proc.stdout, proc.stdout


CAPPED_RUN = """import runpy, sys
from al_sim.runtime.memory_cap import memory_available_to_process, status_bytes
fraction = (status_bytes("VmData") + 150 * 2**20) / memory_available_to_process()
sys.argv = ["al_sim.run", *sys.argv[1:], f"trainer.memory_limit_fraction={fraction:.6f}"]
runpy.run_module("al_sim.run", run_name="__main__")
"""


def test_a_run_past_its_cap_is_one_out_of_memory_line_and_a_failed_run(tmp_path: Path) -> None:
    """512 px images: their float copies pass a cap set 150 MB above what the process holds.
    In a process of its own: oneDNN, once it failed under a cap, can fail every later
    convolution of its process."""
    args = ["budget=tiny", "budget.rounds=1", *FAST_CLI, "dataset.n_pool=300",
            "dataset.n_test=100", "dataset.image_size=512", "trainer.batch_size=64",
            "tracking.query_grids=false"]
    (tmp_path / "capped.py").write_text(CAPPED_RUN)
    proc = fork_server.run(str(tmp_path / "capped.py"), args, tmp_path, cli_env(),
                           module=False)
    line = assert_refused(proc, tmp_path, ["trainer.memory_limit_fraction", "dataset.image_size"])
    assert line.startswith("error: out of memory: "), line
    assert_failed_runs_only(tmp_path)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = client.search_runs(all_experiments(client))
    assert run.info.status == "FAILED" and "out of memory" in run.data.tags["error"]


def test_onednn_failing_under_the_cap_is_out_of_memory() -> None:
    """oneDNN says only ``could not create a primitive`` when it cannot allocate under the cap
    (a traceback, "a bug", before): an out-of-memory error naming the cap; outside the cap,
    or any other error, stays as it is."""
    from al_sim.runtime.errors import out_of_memory

    fraction = fraction_leaving(200 * MB)
    with (pytest.raises(MemoryError, match=r"^oneDNN could not create a primitive under the "
                                           r"\d+ MB memory cap \(trainer.memory_limit_fraction=")
          as caught, memory_cap(fraction)):
        raise RuntimeError("could not create a primitive")
    assert (out_of_memory(caught.value) or "").startswith("out of memory: oneDNN could not")
    with pytest.raises(RuntimeError, match="^another failure$"), memory_cap(fraction):
        raise RuntimeError("another failure")
    with pytest.raises(RuntimeError, match="^could not create a primitive$"), memory_cap(None):
        raise RuntimeError("could not create a primitive")


def test_the_input_size_probe_tells_memory_from_a_model_too_deep(tiny_dataset) -> None:
    """The probe pass before round 0: a failed allocation stays an out-of-memory error (the
    CLI's ``out of memory:`` line), a shape the model cannot take is the config error, any
    other failure stays the error it is (oneDNN's, under the memory cap, was once reported as
    images too small for the model)."""
    from al_sim.app.components import check_input_size
    from al_sim.models.simple_cnn import SimpleCNN
    from al_sim.runtime.errors import ConfigError

    class Failing(SimpleCNN):
        def forward(self, x):  # noqa: ANN001, ANN201 - nn.Module's signature
            raise RuntimeError(self.message)

    def failing(message: str):
        def factory(seed: int) -> SimpleCNN:
            model = Failing(1, 3, widths=[4], hidden=8, dropout=0.3)
            model.message = message
            return model
        return factory

    oom = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 33554432 bytes"
    with pytest.raises(RuntimeError, match="can't allocate memory"):
        check_input_size(failing(oom), tiny_dataset, "simple_cnn")
    with pytest.raises(ConfigError, match="cannot take 28x28 images.*raise dataset.image_size"):
        check_input_size(failing("Output size is too small"), tiny_dataset, "simple_cnn")
    # anything else is the model's (or torch's) own fault, not the images' size: kept as it is
    with pytest.raises(RuntimeError, match="^could not create a primitive$"):
        check_input_size(failing("could not create a primitive"), tiny_dataset, "simple_cnn")
