"""Fingerprint a run dir's results: sha256 of queries.csv and of metrics.csv without timings.

Two runs with the same config and seed must print the same two lines (the
determinism check used across refactors):

    python benchmarks/run_hash.py outputs/2026-11-26/10-00-00
    python benchmarks/run_hash.py --smoke   # on a run dir it writes
"""

from __future__ import annotations

import csv
import hashlib
import sys
import tempfile
from pathlib import Path


def run_hashes(run_dir: Path) -> tuple[str, str]:
    """(queries, metrics) digests, 16 hex digits each; metrics drop the ``time/`` columns."""
    queries = hashlib.sha256((run_dir / "queries.csv").read_bytes()).hexdigest()[:16]
    with (run_dir / "metrics.csv").open() as f:
        rows = list(csv.reader(f))
    keep = [i for i, name in enumerate(rows[0]) if not name.startswith("time/")]
    text = "\n".join(",".join(row[i] for i in keep) for row in rows)
    return queries, hashlib.sha256(text.encode()).hexdigest()[:16]


def write_smoke_run(run_dir: Path) -> Path:
    """A two-round run dir in the layout al_sim writes (``--smoke``: the hashing path, in ms)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "queries.csv").write_text("round,index,score\n1,3,0.9\n1,7,0.8\n")
    (run_dir / "metrics.csv").write_text("round,n_labeled,test/accuracy,time/train_s\n"
                                         "0,20,0.5,1.25\n1,30,0.6,1.5\n")
    return run_dir


if __name__ == "__main__":
    if sys.argv[1:] == ["--smoke"]:
        with tempfile.TemporaryDirectory() as tmp:
            q, m = run_hashes(write_smoke_run(Path(tmp) / "run"))
            same = run_hashes(write_smoke_run(Path(tmp) / "again")) == (q, m)
            print(f"queries {q}\nmetrics {m}\nsame run written twice, same hashes: {same}")
            sys.exit(0 if same else 1)
    q, m = run_hashes(Path(sys.argv[1]))
    print(f"queries {q}\nmetrics {m}")
