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
