"""A CPU run capped below the machine's memory (``trainer.memory_limit_fraction``): asking for
too much is an allocation failure, one ``error:`` line and a FAILED run, not the OOM killer."""

from __future__ import annotations

import resource
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from al_sim.runtime.memory_cap import cgroup_memory_limit, memory_available_to_process, memory_cap
from tests.conftest import FAST_CLI, all_experiments, assert_failed_runs_only, refusal

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
    proc.write_text("12:memory:/old/v1/layout\n")  # cgroup v1: no unified limit read
    assert cgroup_memory_limit(proc, root) is None


def test_a_run_past_its_cap_is_one_out_of_memory_line_and_a_failed_run(tmp_path: Path) -> None:
    """512 px images: their float copies pass a cap set 150 MB above what the process holds."""
    fraction = fraction_leaving(150 * MB)
    line = refusal(["budget=tiny", "budget.rounds=1", *FAST_CLI, "dataset.n_pool=300",
                    "dataset.n_test=100", "dataset.image_size=512", "trainer.batch_size=64",
                    "tracking.query_grids=false",
                    f"trainer.memory_limit_fraction={fraction:.6f}"], tmp_path)
    assert line.startswith("error: out of memory: "), line
    assert "trainer.memory_limit_fraction" in line and "dataset.image_size" in line
    assert_failed_runs_only(tmp_path)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = client.search_runs(all_experiments(client))
    assert run.info.status == "FAILED" and "out of memory" in run.data.tags["error"]


def test_the_input_size_probe_tells_memory_from_a_model_too_deep(tiny_dataset) -> None:
    """The probe pass before round 0: a failed allocation stays an out-of-memory error (the
    CLI's ``out of memory:`` line), a shape the model cannot take is the config error."""
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
