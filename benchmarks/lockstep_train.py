"""Lock-step vs one-by-one: one AL round's training of K stack members (each on its own
labelled set and seed) with ``core.lockstep.fit_lockstep`` against K ``Trainer.fit`` calls, and
one round's pool scoring of a mixed stack (members in turn entropy: probabilities, BALD:
``--mc-samples`` MC-dropout draws, BADGE: embeddings and probabilities, each on its own
unlabelled rows) with ``core.stack_scoring.score_members`` (the pool once) against K
``Trainer.score`` calls. Interleaved repeats; prints medians of wall and CPU time (the
process's, all threads: the fairer figure on a loaded machine), spread (min-max), the ratio,
how far a lock-stepped member's weights are from the same member trained alone, and how far
the pool-once outputs are from the member's own pass (max |difference|).
Runs with OpenMP threads waiting passively, as a run does (``trainer.omp_wait_policy``),
unless ``OMP_WAIT_POLICY`` says otherwise; ``--threads`` sets torch's thread count.

    python benchmarks/lockstep_train.py                              # SimpleCNN, K=6, CPU
    python benchmarks/lockstep_train.py --model resnet18 --device cuda --members 30
    python benchmarks/lockstep_train.py --smoke                      # tiny, seconds
    python benchmarks/lockstep_train.py --no-train                   # pool scoring only
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from al_sim.app.components import build_model
from al_sim.config.data import PreprocessConf
from al_sim.config.schema import TrainerConf
from al_sim.core.lockstep import fit_lockstep
from al_sim.core.scoring import PROBS, Need, Output, images_source
from al_sim.core.stack_scoring import score_members
from al_sim.core.training import Trainer
from al_sim.data.transforms import Preprocess
from al_sim.models.base import ALModel

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"


def members(model: str, k: int, px: int, device: torch.device) -> list[ALModel]:
    cfg = OmegaConf.load(CONF / f"{model}.yaml")
    return [build_model(cfg, 1, 3, seed, input_size=px).to(device)  # type: ignore[arg-type]
            for seed in range(k)]


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """Wall and CPU seconds of ``fn()``."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    if "OMP_WAIT_POLICY" not in os.environ:  # read when torch loaded OpenMP: start again
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="simple_cnn", choices=["simple_cnn", "resnet18"])
    parser.add_argument("--members", type=int, default=6)
    parser.add_argument("--labelled", type=int, default=400)
    parser.add_argument("--pool", type=int, default=4000)
    parser.add_argument("--px", type=int, default=28)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--mc-samples", type=int, default=20)  # conf/strategy/bald.yaml's
    parser.add_argument("--no-train", action="store_true", help="time pool scoring only")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.smoke:
        args.members, args.labelled, args.pool, args.epochs, args.reps = 2, 40, 100, 1, 1
    device = torch.device(args.device)
    conf = TrainerConf(epochs=args.epochs, min_steps=0, batch_size=64, eval_batch_size=512,
                       deterministic=True)
    trainer = Trainer(conf, Preprocess(PreprocessConf(), channels=1), device)
    rng = np.random.default_rng(0)
    shape = (1, args.px, args.px)
    xs = [torch.from_numpy(rng.integers(0, 256, (args.labelled, *shape), dtype=np.uint8))
          for _ in range(args.members)]
    ys = [rng.integers(0, 3, args.labelled) for _ in range(args.members)]
    pool = torch.from_numpy(rng.integers(0, 256, (args.pool, *shape), dtype=np.uint8))
    seeds = list(range(args.members))
    source = images_source(pool, pool, "pool")
    needs = [PROBS, Need("mc", args.mc_samples), Need("features_and_probs")]  # member k's: k % 3
    asks = [(np.setdiff1d(np.arange(args.pool), rng.choice(args.pool, args.labelled,
                                                           replace=False)), needs[k % 3])
            for k in range(args.members)]
    times: dict[str, list[tuple[float, float]]] = {
        **({} if args.no_train else {"train one by one": [], "train lock-step": []}),
        "score one by one": [], "score pool-once": []}
    warm = members(args.model, 2, args.px, device)  # kernels warmed up, untimed
    if not args.no_train:
        fit_lockstep(trainer, warm, [x[:20] for x in xs[:2]], [y[:20] for y in ys[:2]], 3,
                     [0, 1])
        trainer.fit(warm[0], xs[0][:20], ys[0][:20], 3, 0)
    small = [(idx[:64], need) for idx, need in asks[:2]]
    score_members(trainer, warm, source, small)
    for model, (idx, need) in zip(warm, small, strict=True):
        trainer.score(model, source, idx, need)
    diff = out_diff = 0.0
    for _ in range(args.reps):
        alone = members(args.model, args.members, args.px, device)
        stacked = members(args.model, args.members, args.px, device)
        if not args.no_train:
            times["train one by one"].append(timed(lambda m=alone: [  # type: ignore[misc]
                trainer.fit(m[k], xs[k], ys[k], 3, seeds[k]) for k in range(args.members)],
                device))
            times["train lock-step"].append(timed(
                lambda m=stacked: fit_lockstep(trainer, m, xs, ys, 3, seeds), device))  # type: ignore[misc]
            diff = max(float((a.float() - b.float()).abs().max())
                       for ma, mb in zip(alone, stacked, strict=True)
                       for a, b in zip(ma.state_dict().values(), mb.state_dict().values(),
                                       strict=True) if a.is_floating_point())
        got: dict[str, list[Output]] = {}

        def one_by_one(m: list[ALModel] = alone, out: dict[str, list[Output]] = got) -> None:
            out["alone"] = [trainer.score(model, source, idx, need)
                            for model, (idx, need) in zip(m, asks, strict=True)]

        def pool_once(m: list[ALModel] = alone, out: dict[str, list[Output]] = got) -> None:
            out["once"] = score_members(trainer, m, source, asks)

        times["score one by one"].append(timed(one_by_one, device))
        times["score pool-once"].append(timed(pool_once, device))
        out_diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                       for one, other in zip(got["alone"], got["once"], strict=True)
                       for a, b in zip(*(o if isinstance(o, tuple) else (o,)
                                         for o in (one, other)), strict=True))
    print(f"{args.model} {args.px} px, {args.members} members x {args.labelled} labelled, "
          f"{args.epochs} epochs, pool {args.pool} (scoring: entropy, BALD x{args.mc_samples}, "
          f"BADGE in turn), {device}, {args.reps} rep(s), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    for name, pairs in times.items():
        walls, cpus = [w for w, _c in pairs], [c for _w, c in pairs]
        print(f"  {name:17s} median {statistics.median(walls):7.2f} s "
              f"(min {min(walls):.2f}, max {max(walls):.2f})   CPU median "
              f"{statistics.median(cpus):7.2f} s (min {min(cpus):.2f}, max {max(cpus):.2f})")
    for what, other in (("train", "lock-step"), ("score", "pool-once")):
        if f"{what} one by one" not in times:
            continue
        ratios = [statistics.median(v[i] for v in times[f"{what} one by one"])
                  / statistics.median(v[i] for v in times[f"{what} {other}"]) for i in (0, 1)]
        print(f"  {what}: {other} {ratios[0]:.2f}x one by one in wall time, "
              f"{ratios[1]:.2f}x in CPU time")
    if not args.no_train:
        print(f"  max |weight difference| lock-step vs alone: {diff:.2e}")
    print(f"  max |output difference| pool-once vs alone (same weights): {out_diff:.2e}")


if __name__ == "__main__":
    main()
