"""Training speed on a shared machine: torch threads and OpenMP waiting vs other processes' load.

Times the default model's training steps (SimpleCNN, batch 64, 28 px, as
``python -m al_sim.run`` trains) in a fresh process per setting, idle and with
``--busy`` processes spinning beside it (a stand-in for other users' jobs), and
prints wall time per setting and the slowdown against the same setting idle.
Settings: torch threads (1 or every core) x OpenMP wait policy (``ACTIVE``: spin,
as libgomp does by default; ``PASSIVE``: sleep, al_sim's default since
``trainer.omp_wait_policy=passive``). "as is" is the machine's load without the
spinners (say it when you quote figures: the load average is printed).

    python benchmarks/shared_cpu.py [--steps 20] [--busy 1]   # --smoke: a few steps
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(steps: int, threads: int) -> None:
    """Train ``steps`` steps and print the wall time (runs in its own process)."""
    import torch

    from al_sim.models.simple_cnn import SimpleCNN

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = SimpleCNN(1, 2, widths=[16, 32, 64], hidden=128, dropout=0.3)
    optimiser = torch.optim.AdamW(model.parameters(), 1e-3)
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 2, (64,))
    for warm_up in (True, False):
        start = time.perf_counter()
        for _ in range(2 if warm_up else steps):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    print(f"{time.perf_counter() - start:.3f}")


def spin() -> None:
    """Burn one core until killed (another user's job)."""
    while True:
        pass


def timed(steps: int, threads: int, policy: str | None, limit_s: float) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    env["PYTHONPATH"] = str(REPO)
    try:
        out = subprocess.run([sys.executable, __file__, "--child", str(steps), str(threads)],
                             env=env, capture_output=True, text=True, check=True,
                             timeout=limit_s)
    except subprocess.TimeoutExpired:
        return math.inf  # printed as "inf": slower than the limit
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--busy", type=int, default=1, help="spinning processes beside it")
    parser.add_argument("--limit-s", type=float, default=300, help="per timing, then inf")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    steps = 3 if args.smoke else args.steps
    cores = len(os.sched_getaffinity(0))
    settings = [(cores, "ACTIVE"), (cores, "PASSIVE"), (1, "PASSIVE")]
    if args.smoke:
        settings = settings[1:2]
    print(f"{cores} cores, {steps} steps, load before: {os.getloadavg()[0]:.2f}", flush=True)
    print(f"{'threads':>7} {'OMP_WAIT_POLICY':>15} {'as is s':>7} {f'+{args.busy} busy s':>10} "
          f"{'slowdown':>8}")
    for threads, policy in settings:
        idle = timed(steps, threads, policy, args.limit_s)
        spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.busy)]
        for p in spinners:
            p.start()
        try:
            busy = timed(steps, threads, policy, args.limit_s)
        finally:
            for p in spinners:
                p.kill()
                p.join()
        print(f"{threads:>7} {policy:>15} {idle:>7.2f} {busy:>10.2f} "
              f"{busy / idle:>7.2f}x", flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
