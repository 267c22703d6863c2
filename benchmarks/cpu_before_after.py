"""CPU figures before and after a change, measured in one run, interleaved.

Checks out ``--before`` (default: b90eb17, the tree the GPU issue was filed
against) into a temporary git worktree and measures, alternately in that tree
and in this one, each in a fresh process with the same thread count:

* pool scoring: ``Trainer.predict_proba`` on random uint8 images (SimpleCNN,
  28 and 64 px; the default trainer settings of each tree), images/s;
* training: ``Trainer.fit`` on 2,048 images at 28 px, images/s;
* the default run end to end (``python -m al_sim.run`` on the earlier default
  scenario, tracking off), wall seconds.

Prints the median over ``--repeats`` of each figure per tree and after/before.

    python benchmarks/cpu_before_after.py [--before REV] [--repeats 3] [--threads 2] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# --smoke: the smallest run that still goes through every round (tests/test_benchmarks.py).
# (default_run adds progress=false and the thread count)
TINY = ["budget=tiny", "budget.rounds=1", "dataset.n_pool=120", "dataset.n_test=60",
        "trainer.epochs=1", "trainer.min_steps=1"]

# Runs inside either tree: the module layout moved between them.
PROBE = r"""
import json, sys, time
import torch
torch.manual_seed(0)
torch.set_num_threads(int(sys.argv[1]))
smoke = sys.argv[2:] == ["smoke"]  # tiny sizes
try:
    from al_sim.config.data import PreprocessConf
    from al_sim.config.schema import TrainerConf
    from al_sim.core.training import Trainer
except ImportError:
    from al_sim.config import PreprocessConf, TrainerConf
    from al_sim.training import Trainer
from al_sim.data.transforms import Preprocess
from al_sim.models.simple_cnn import SimpleCNN

def best(fn, n=3):
    times = []
    for _ in range(n):
        start = time.perf_counter(); fn(); times.append(time.perf_counter() - start)
    return min(times)

out = {}
device = torch.device("cpu")
for px, pool in ((28, 64), (64, 16)) if smoke else ((28, 8192), (64, 2048)):
    trainer = Trainer(TrainerConf(device="cpu", epochs=1, min_steps=0),
                      Preprocess(PreprocessConf(), 1), device)
    model = SimpleCNN(1, 3, widths=[16, 32, 64], hidden=128, dropout=0.3)  # the default
    x = torch.randint(0, 256, (pool, 1, px, px), dtype=torch.uint8)
    trainer.predict_proba(model, x[:256])  # warm-up: oneDNN kernels
    out[f"scoring {px} px img/s"] = pool / best(lambda: trainer.predict_proba(model, x))
n = 64 if smoke else 2048
x = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8)
y = torch.randint(0, 3, (n,)).numpy()
trainer = Trainer(TrainerConf(device="cpu", epochs=2, min_steps=0),
                  Preprocess(PreprocessConf(), 1), device)
model = SimpleCNN(1, 3, widths=[16, 32, 64], hidden=128, dropout=0.3)
out["training 28 px img/s"] = 2 * n / best(lambda: trainer.fit(model, x, y, 3, 0), 2)
print(json.dumps(out))
"""


def _env(tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "PYTHONPATH": str(tree)}


def probe(tree: Path, threads: int, smoke: bool = False) -> dict[str, float]:
    """The scoring and training figures of the al_sim in ``tree``."""
    size = ["smoke"] if smoke else []
    proc = subprocess.run([sys.executable, "-c", PROBE, str(threads), *size], cwd=tree,
                          env=_env(tree), capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def default_run(tree: Path, threads: int, scenario: list[str], work: Path) -> float:
    """Wall seconds of the default run (tracking off) with ``tree``'s al_sim."""
    run_dir = work / f"run-{time.monotonic_ns()}"
    args = [sys.executable, "-m", "al_sim.run", *scenario, "tracking.enabled=false",
            "progress=false", f"trainer.num_threads={threads}", f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    subprocess.run(args, cwd=tree, env=_env(tree), capture_output=True, text=True, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="b90eb17")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true",
                        help="this tree against itself (no checkout), tiny sizes, one repeat")
    args = parser.parse_args()
    if args.smoke:
        args.before, args.repeats, args.threads = "HEAD (this tree)", 1, 1
    figures: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "before"
        if args.smoke:  # one pass through this tree: the figures are read as "before" too
            trees = {"after": (REPO, TINY)}
        else:
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old),
                            args.before], capture_output=True, check=True)
            trees = {"before": (old, []), "after": (REPO, ["dataset=synthetic_legacy"])}
        try:
            start = time.perf_counter()
            for _ in range(args.repeats):
                for label, (tree, scenario) in trees.items():
                    got = probe(tree, args.threads, args.smoke)
                    got["default run s"] = default_run(tree, args.threads, scenario, Path(tmp))
                    for key, value in got.items():
                        figures[label].setdefault(key, []).append(value)
        finally:
            if not args.smoke:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                                str(old)], capture_output=True, check=False)
    print(f"before = {args.before}, after = this tree; {args.threads} threads, median of "
          f"{args.repeats} interleaved repeats ({time.perf_counter() - start:.0f} s)")
    if args.smoke:
        figures["before"] = figures["after"]
    print(f"{'figure':<24}{'before [min-max]':>26}{'after [min-max]':>26}{'after/before':>14}")
    for key in figures["before"]:
        cells = []
        for label in ("before", "after"):
            values = figures[label][key]
            cells.append(f"{statistics.median(values):.1f} [{min(values):.0f}-{max(values):.0f}]")
        ratio = statistics.median(figures["after"][key]) / statistics.median(figures["before"][key])
        print(f"{key:<24}{cells[0]:>26}{cells[1]:>26}{ratio:>14.2f}")


if __name__ == "__main__":
    main()
