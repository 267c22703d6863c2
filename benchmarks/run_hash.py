"""Fingerprint a run dir's results: sha256 of queries.csv and of metrics.csv without timings.

Two runs with the same config and seed must print the same two lines (the
determinism check used across refactors):

    python benchmarks/run_hash.py outputs/2026-11-26/10-00-00
"""

from __future__ import annotations

import csv
import hashlib
import sys
from pathlib import Path


def run_hashes(run_dir: Path) -> tuple[str, str]:
    """(queries, metrics) digests, 16 hex digits each; metrics drop the ``time/`` columns."""
    queries = hashlib.sha256((run_dir / "queries.csv").read_bytes()).hexdigest()[:16]
    with (run_dir / "metrics.csv").open() as f:
        rows = list(csv.reader(f))
    keep = [i for i, name in enumerate(rows[0]) if not name.startswith("time/")]
    text = "\n".join(",".join(row[i] for i in keep) for row in rows)
    return queries, hashlib.sha256(text.encode()).hexdigest()[:16]


if __name__ == "__main__":
    q, m = run_hashes(Path(sys.argv[1]))
    print(f"queries {q}\nmetrics {m}")
