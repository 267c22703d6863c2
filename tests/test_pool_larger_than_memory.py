"""A memory-mapped pool costs the process no memory in proportion to its size.

Two real runs on MedMNIST+-layout 224 px archives (members stored uncompressed,
so the pool is memory-mapped in place) of 16 MB and 112 MB score every pool image
(entropy). The peaks of ``RssAnon`` (resident memory that is not file pages: where
a copy of the pool, or a heap grown per scoring batch, would live) and ``VmData``
(what ``ulimit -d`` counts) are sampled from ``/proc/<pid>/status`` every 50 ms:
adding 96 MB to the pool must leave them nearly where they were. The mapped file's pages
the kernel caches are not the process's memory and are not counted.

A run on a pool several times larger than the memory the process may hold (3.2 GB
under ``ulimit -d``) is ``benchmarks/large_pool.py``, with its figures in BENCHMARKS.md.
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import pytest

from benchmarks.large_pool import MB, RUN_ARGS, SIZE, run_limited, write_archive

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="reads /proc/<pid>/status")]
SMALL, LARGE = 16 * MB, 112 * MB


def _peaks(tmp_path: Path, pool_bytes: int) -> dict[str, int]:
    data = tmp_path / f"data{pool_bytes}"
    n_train = pool_bytes // (SIZE * SIZE) + 1
    try:
        write_archive(data, n_train=n_train)
        run = tmp_path / f"run{pool_bytes}"
        run.mkdir()
        # in_memory_max_mb=0: map it even where auto would read it whole; batches of 8: the
        # peaks are sampled, and a sample that lands on a 64-image batch's activations or not
        # moved RssAnon by 50 MB between runs of the same pool (by 20 MB with batches of 8)
        proc, _, peaks = run_limited([*RUN_ARGS, f"dataset.root={data}",
                                      "dataset.in_memory_max_mb=0", "tracking.enabled=false",
                                      "trainer.batch_size=8", "trainer.eval_batch_size=8"],
                                     run, None)
        assert proc.returncode == 0, proc.stderr[-3000:]
        with (run / "run" / "queries.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 30  # budget=tiny, 1 round: 20 initial + 10 queried from the pool
        assert max(int(r["pool_index"]) for r in rows) < n_train
    finally:
        shutil.rmtree(data, ignore_errors=True)
    return peaks


def test_a_mapped_pool_seven_times_larger_costs_no_more_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.disk_usage(tmp_path).free < 2 * LARGE:
        pytest.skip(f"needs {2 * LARGE / MB:.0f} MB free in {tmp_path}")
    # glibc's per-thread arenas (64 MB reservations, grown as threads allocate) made two runs
    # of the same pool differ by up to 90 MB of VmData; with one arena and small batches they
    # differ by 10-20 MB, so the bound below measures the pool, not the allocator or the sampling
    monkeypatch.setenv("MALLOC_ARENA_MAX", "1")
    small, large = _peaks(tmp_path, SMALL), _peaks(tmp_path, LARGE)
    added = LARGE - SMALL
    # a copy of the pool would add all 96 MB to both; the bound sits between that and the
    # allocator's noise left with one arena
    for key in ("RssAnon", "VmData"):
        assert large[key] - small[key] < added * 3 / 4, (key, small[key], large[key])


def test_running_out_of_memory_is_one_error_line_and_a_failed_run(tmp_path: Path) -> None:
    """Told to read an 800 MB pool whole under a 1.6 GB data limit: a clean refusal."""
    from mlflow.tracking import MlflowClient

    from tests.conftest import assert_refused

    data = tmp_path / "data"
    try:
        write_archive(data, n_train=800 * MB // (SIZE * SIZE))
        (tmp_path / "run").mkdir()
        proc, _, _ = run_limited([*RUN_ARGS, f"dataset.root={data}",
                                  "dataset.in_memory_max_mb=100000"], tmp_path / "run",
                                 1600 * MB)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    assert_refused(proc, tmp_path / "run", ["out of memory", "trainer.eval_batch_size",
                                            "dataset.in_memory_max_mb"])
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("al_sim").experiment_id])
    assert run.info.status == "FAILED" and "out of memory" in run.data.tags["error"]


def test_allocation_failures_of_numpy_and_torch_map_to_the_error_line() -> None:
    import torch

    from al_sim.run import error_line

    cases = [MemoryError("Unable to allocate 3.12 GiB for an array"),
             RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't "
                          "allocate memory: you tried to allocate 25690112 bytes"),
             torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
             RuntimeError("can't start new thread")]  # its stack past the cap: a run traced back
    for exc in cases:
        line = error_line(exc)
        assert line is not None and line.startswith("error: out of memory: ")
    assert error_line(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
