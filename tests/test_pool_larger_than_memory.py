"""A real run on a pool several times larger than the memory the process holds.

The pool is a MedMNIST+-layout 224 px archive (members stored uncompressed)
of 3.2 GB. The run scores all of it (entropy) and must finish while the
process's own memory stays far below the pool: the peaks of ``RssAnon``
(resident memory that is not file pages: where a copy of the pool would
live) and ``VmData`` (everything ``ulimit -d`` counts) are sampled from
``/proc/<pid>/status`` every 50 ms. The mapped file's pages the kernel caches
are not the process's memory and are not counted.

Under an actual ``ulimit -d`` below the pool size, see ``benchmarks/large_pool.py``
and BENCHMARKS.md: it passed at 2.4 GB for this pool, but tries with tighter
limits failed in ways not yet explained, so the test does not depend on one.
About 10 minutes on the loaded 2-core machine (scoring 67k images of 224 px
on one thread): ``slow``.
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
POOL_BYTES = 3200 * MB


def test_a_run_on_a_pool_far_larger_than_its_memory(tmp_path: Path) -> None:
    if shutil.disk_usage(tmp_path).free < 2 * POOL_BYTES:
        pytest.skip(f"needs {2 * POOL_BYTES / MB:.0f} MB free in {tmp_path}")
    data = tmp_path / "data"
    try:
        archive = write_archive(data, n_train=POOL_BYTES // (SIZE * SIZE) + 1)
        pool = archive.stat().st_size
        assert pool > POOL_BYTES
        (tmp_path / "run").mkdir()
        # in_memory_max_mb=0: map it even where auto would read it (24 GB machines can)
        proc, _, peaks = run_limited([*RUN_ARGS, f"dataset.root={data}",
                                      "dataset.in_memory_max_mb=0"], tmp_path / "run", None)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert peaks["RssAnon"] < pool / 2, peaks  # measured: 805 MB for this 3.2 GB pool
        assert peaks["VmData"] < pool, peaks  # measured: 1,445 MB
        with (tmp_path / "run" / "run" / "queries.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 30  # budget=tiny, 1 round: 20 initial + 10 queried from the pool
        assert max(int(r["pool_index"]) for r in rows) < POOL_BYTES // (SIZE * SIZE) + 1
    finally:
        shutil.rmtree(data, ignore_errors=True)  # do not leave GBs in pytest's temp dirs


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
             torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")]
    for exc in cases:
        line = error_line(exc)
        assert line is not None and line.startswith("error: out of memory: ")
    assert error_line(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
