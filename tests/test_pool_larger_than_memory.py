"""A real run on a pool larger than the memory the process may allocate.

The limit is RLIMIT_DATA (``ulimit -d``): heap, anonymous and private
writable memory, i.e. what a copy of the pool would need; a read-only file
mapping does not count. It is set to what torch and al_sim need after import
plus 1.3 GiB of room for the run, and the pool (a MedMNIST+-layout 224 px
archive, stored uncompressed) is made 800 MiB larger than that limit. The run
scores the whole pool (entropy) and must finish; the same run told to read
the pool whole must fail under the same limit, which shows the limit bites.
About 10 minutes on the loaded 2-core machine (scoring 67k images of 224 px
on one thread): ``slow``.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.large_pool import MB, RUN_ARGS, SIZE, run_limited, write_archive

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="RLIMIT_DATA counts mmap only on Linux")]
ROOM = 1300 * MB  # for the run itself (MLflow store, activations, allocator slack); a run
# peaked 350 MB above its imports (BENCHMARKS.md), but runs under a tighter limit failed
EXCESS = 800 * MB  # pool size above the limit


def imported_vm_data() -> int:
    """VmData of a fresh Python after importing what a run imports."""
    code = ("import torch, mlflow, sklearn, hydra, al_sim.run, al_sim.experiment; "
            "print([l for l in open('/proc/self/status') if l.startswith('VmData')][0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return int(out.split()[1]) * 1024


def test_a_run_on_a_pool_larger_than_its_memory_limit(tmp_path: Path) -> None:
    limit = imported_vm_data() + ROOM
    pool_bytes = limit + EXCESS
    if shutil.disk_usage(tmp_path).free < 2 * pool_bytes:
        pytest.skip(f"needs {2 * pool_bytes / MB:.0f} MB free in {tmp_path}")
    data = tmp_path / "data"
    try:
        archive = write_archive(data, n_train=pool_bytes // (SIZE * SIZE) + 1)
        assert archive.stat().st_size > limit + EXCESS
        args = [*RUN_ARGS, f"dataset.root={data}"]
        (tmp_path / "mapped").mkdir()
        proc, _, peaks = run_limited(args, tmp_path / "mapped", limit)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert peaks["VmData"] <= limit < archive.stat().st_size
        with (tmp_path / "mapped" / "run" / "queries.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 30  # budget=tiny, 1 round: 20 initial + 10 queried from the pool
        (tmp_path / "whole").mkdir()
        whole, _, _ = run_limited([*args, f"dataset.in_memory_max_mb={pool_bytes // MB * 2}"],
                                  tmp_path / "whole", limit)
        assert whole.returncode != 0
        assert "allocate" in whole.stderr or "MemoryError" in whole.stderr
    finally:
        shutil.rmtree(data, ignore_errors=True)  # do not leave GBs in pytest's temp dirs
