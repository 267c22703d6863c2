"""Volumes on this machine: a round's cost for the 3D models at 28^3 and 64^3, and pool scoring
through al_sim against a bare ``model(x)`` loop.

For each row (model x side), interleaved over ``--repeats``:

- **train step**: one optimiser step of ``Trainer.fit`` on ``--batch`` volumes (the fit of a
  labelled set of that size with ``min_steps=1``, ``epochs=1``), seconds;
- **score**: ``Trainer.predict_proba`` over a pool of ``--pool`` uint8 volumes (per-batch
  conversion, batches sized by ``trainer.inference_memory_mb``), seconds per volume;
- **naive**: a bare ``model(x)`` loop over the same pool already in float32, batches of
  ``--naive-batch``, ``torch.no_grad``, on a copy of the same weights in torch's default
  memory format (as ``benchmarks/pool_scoring.py``'s naive loop), seconds per volume;
  **x naive** = naive / al_sim. Score and naive take turns going first after the fit.

A round of the default budget and trainer (``trainer.min_steps`` steps of
``trainer.batch_size`` volumes, then scoring a pool of ``--round-pool`` volumes) is
estimated from the medians: steps x step time + pool x score time. Medians with min-max.

    python benchmarks/volume_rounds.py [--repeats 3] [--rows cnn3d:28,cnn3d:64,...]
        [--pool 64] [--batch 16] [--threads N] [--smoke]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from al_sim.app.components import build_model
from al_sim.config.data import PreprocessConf
from al_sim.config.schema import TrainerConf
from al_sim.core.training import Trainer
from al_sim.data.synthetic_volume import generate_volumes
from al_sim.data.transforms import Preprocess

CONF = Path(__file__).resolve().parent.parent / "conf"
ROWS = "cnn3d:28,cnn3d:64,resnet18_3d:28,resnet18_3d:64"


class Row:
    """One model at one volume side: its pool, its model and its measurements."""

    def __init__(self, spec: str, args: argparse.Namespace) -> None:
        self.name, side = spec.split(":")
        self.side = int(side)
        model_cfg = OmegaConf.load(CONF / "model" / f"{self.name}.yaml")
        self.model = build_model(model_cfg, 1, 2, seed=0, input_size=self.side)
        defaults = OmegaConf.load(CONF / "trainer" / "default.yaml")
        self.default_steps, self.default_batch = int(defaults.min_steps), int(defaults.batch_size)
        pool, labels = generate_volumes(max(args.pool, args.batch), self.side, [0.5, 0.5], 0.6,
                                        seed=0)
        self.pool = torch.from_numpy(pool[: args.pool])
        self.train_x, self.train_y = torch.from_numpy(pool[: args.batch]), labels[: args.batch]
        conf = TrainerConf(epochs=1, min_steps=1, batch_size=args.batch,
                           inference_memory_mb=float(defaults.inference_memory_mb),
                           eval_batch_table=dict(defaults.eval_batch_table))
        self.trainer = Trainer(conf, Preprocess(PreprocessConf(), 1, spatial_rank=3),
                               torch.device("cpu"))
        self.naive_batch = args.naive_batch
        self.step, self.score, self.naive = [], [], []  # type: ignore[var-annotated]

    def measure_once(self, naive_first: bool = False) -> None:
        start = time.perf_counter()
        self.trainer.fit(self.model, self.train_x, self.train_y, 2, seed=0)
        self.step.append(time.perf_counter() - start)
        # the bare loop's own copy in torch's default memory format, as a user's loop has it
        # (al_sim's scoring leaves its model channels-last)
        bare = copy.deepcopy(self.model).to(memory_format=torch.contiguous_format).eval()
        x = self.pool.float().div_(255).sub_(0.5).div_(0.5)
        for which in ("naive", "score") if naive_first else ("score", "naive"):
            start = time.perf_counter()
            if which == "score":
                self.trainer.predict_proba(self.model, self.pool)
            else:
                with torch.no_grad():
                    for i in range(0, len(x), self.naive_batch):
                        bare(x[i : i + self.naive_batch])
            getattr(self, which).append((time.perf_counter() - start) / len(x))


def spread(values: list[float], scale: float = 1.0, fmt: str = "{:.3f}") -> str:
    """Median (min-max) of ``values`` times ``scale``."""
    v = [x * scale for x in values]
    return f"{fmt.format(statistics.median(v))} ({fmt.format(min(v))}-{fmt.format(max(v))})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", default=ROWS)
    parser.add_argument("--pool", type=int, default=64, help="volumes scored per repeat")
    parser.add_argument("--batch", type=int, default=16, help="volumes in the timed train step")
    parser.add_argument("--naive-batch", type=int, default=16)
    parser.add_argument("--round-pool", type=int, default=1000,
                        help="pool size of the estimated round (MedMNIST 3D: ~1,000)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--smoke", action="store_true",
                        help="one repeat, a 4-volume pool, cnn3d at 16^3 (seconds)")
    args = parser.parse_args()
    if args.smoke:
        args.repeats, args.rows, args.pool, args.batch, args.naive_batch = 1, "cnn3d:16", 4, 4, 4
    torch.set_num_threads(args.threads)
    begin = time.perf_counter()
    rows = [Row(spec, args) for spec in args.rows.split(",")]
    for row in rows:  # warm-up, not counted: first-call imports, the activation probe
        row.measure_once()
        row.step, row.score, row.naive = [], [], []
    for repeat in range(args.repeats):
        for row in rows:  # the first pass after a fit is slower: each side goes first in turn
            row.measure_once(naive_first=repeat % 2 == 1)
    print(f"volume rounds: {args.repeats} repeats, {args.threads} threads, pool {args.pool}, "
          f"train batch {args.batch}, load {os.getloadavg()[0]:.2f}")
    print(f"{'row':<18} {'train step s':>22} {'score ms/vol':>22} {'naive ms/vol':>22} "
          f"{'x naive':>18} {'round s (est.)':>15}")
    for row in rows:
        ratio = [n / s for n, s in zip(row.naive, row.score, strict=True)]
        per_step = statistics.median(row.step) * row.default_batch / args.batch
        est = row.default_steps * per_step + args.round_pool * statistics.median(row.score)
        print(f"{row.name + ':' + str(row.side):<18} {spread(row.step):>22} "
              f"{spread(row.score, 1e3, '{:.2f}'):>22} {spread(row.naive, 1e3, '{:.2f}'):>22} "
              f"{spread(ratio, 1.0, '{:.2f}'):>18} {est:>15.0f}")
    print(f"round (est.): {rows[0].default_steps} steps of {rows[0].default_batch} volumes + "
          f"scoring {args.round_pool}; total {time.perf_counter() - begin:.0f} s")


if __name__ == "__main__":
    main()
