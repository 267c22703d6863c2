"""Cost of the advanced strategies on one SimpleCNN and one pool of synthetic 28x28 images.

Prints, from one run: a deterministic pool pass vs BALD with T MC samples
(target <= 1.5x), core-set and BADGE selection on growing pools (target:
linear growth), and peak memory (tracemalloc for numpy, ru_maxrss for the process).

    .venv/bin/python benchmarks/strategy_cost.py [--sizes 10000 30000 100000] [--k 100] [--smoke]
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from al_sim.config.data import PreprocessConf
from al_sim.config.schema import TrainerConf
from al_sim.core.model_view import TrainedModelView
from al_sim.core.training import Trainer
from al_sim.data.synthetic import load_synthetic
from al_sim.data.transforms import Preprocess
from al_sim.models.simple_cnn import SimpleCNN
from al_sim.strategies.base import ArrayModelView, QueryContext, Selection, Strategy
from al_sim.strategies.bayesian import BALD
from al_sim.strategies.diversity import BADGE, CoreSet

MB = 2**20


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """Seconds one call of ``fn`` took, and its result."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def traced(fn: Callable[[], Selection], repeats: int) -> tuple[float, float]:
    """Best seconds of ``repeats`` calls of ``fn``, and the peak traced (numpy) MiB of the first."""
    tracemalloc.start()
    try:
        _, first = timed(fn)
        peak = tracemalloc.get_traced_memory()[1] / MB
    finally:
        tracemalloc.stop()
    seconds = min(timed(fn)[0] for _ in range(repeats))
    np.testing.assert_array_equal(first.indices, fn().indices)  # type: ignore[attr-defined]
    return seconds, peak


def context(view: object, n: int, n_labeled: int, seed: int = 0) -> QueryContext:
    """The first ``n_labeled`` of ``n`` pool images labelled, the rest unlabelled."""
    return QueryContext(model=view, unlabeled=np.arange(n_labeled, n),  # type: ignore[arg-type]
                        labeled=np.arange(n_labeled), labeled_y=np.zeros(n_labeled, np.int64),
                        n_classes=3, rng=np.random.default_rng(seed))


def main() -> None:
    """Run the measurements and print them as markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--k", type=int, default=100, help="images selected per query")
    parser.add_argument("--labeled", type=int, default=100, help="labelled images (core-set)")
    parser.add_argument("--mc-samples", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5, help="timings: best of")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS threads (1: least noise on a shared 2-core machine)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, one repeat: runs in seconds (tests/test_benchmarks.py)")
    args = parser.parse_args()
    fit_n, fit_conf = 1000, TrainerConf(epochs=5, min_steps=100)
    if args.smoke:
        args.sizes, args.k, args.labeled, args.mc_samples, args.repeats = [200, 400], 10, 10, 2, 1
        fit_n, fit_conf = 100, TrainerConf(epochs=1, min_steps=2)
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)  # numpy's BLAS too: idle BLAS threads spin on a busy machine
    torch.manual_seed(0)
    model = SimpleCNN(1, 3, widths=[16, 32, 64], hidden=128, dropout=0.3)
    trainer = Trainer(fit_conf,
                      Preprocess(PreprocessConf(), channels=1), torch.device("cpu"))
    data = load_synthetic(n_pool=max(args.sizes), n_test=10)
    pool = data.pool_x
    t_fit, _ = timed(lambda: trainer.fit(model, pool[:fit_n], data.pool_y[:fit_n], 3, seed=0))
    print(f"SimpleCNN (widths 16/32/64, D={model.embedding_dim}, C=3) fitted on {fit_n:,} labelled "
          f"images ({t_fit:.0f} s); pool: synthetic 28x28 images; CPU, torch+BLAS "
          f"threads={args.threads}; k={args.k}, labelled={args.labeled}\n")

    n0 = min(args.sizes)
    view = TrainedModelView(trainer, model, lambda idx: pool[:n0][idx], seed=0, round_=1)
    bald: Strategy = BALD(mc_samples=args.mc_samples)
    passes, balds = [], []
    for _ in range(args.repeats):  # interleaved so both see the same machine load
        passes.append(timed(lambda: view.probs(np.arange(n0)))[0])
        balds.append(timed(lambda: bald.select(context(view, n0, 0), args.k))[0])
    t_pass, t_bald = min(passes), min(balds)
    print(f"## Pass vs BALD on {n0:,} images (best of {args.repeats})\n")
    print("| measurement | seconds | ratio to one pass |\n| --- | ---: | ---: |")
    print(f"| deterministic pass (predict_proba) | {t_pass:.2f} | 1.00 |")
    print(f"| BALD T={args.mc_samples} (mc_probs + score + top-k) | {t_bald:.2f} "
          f"| {t_bald / t_pass:.2f} |\n")

    rows = []
    for n in args.sizes:
        t_fp, (feats, probs) = timed(lambda n=n: trainer.features_and_proba(model, pool[:n]))
        cached = ArrayModelView(probs=probs, features=feats)
        selections = [lambda s=strategy, c=cached, n=n: s.select(context(c, n, args.labeled),
                                                                 args.k)
                      for strategy in (CoreSet(chunk_size=8192), BADGE(chunk_size=8192))]
        (t_core, m_core), (t_badge, m_badge) = (traced(f, args.repeats) for f in selections)
        full_g = n * probs.shape[1] * feats.shape[1] * 4 / MB
        rows.append((n, t_fp, t_core, m_core, t_badge, m_badge, feats.nbytes / MB, full_g))
    print("## Core-set and BADGE selection (after one features_and_proba pass)\n")
    print("| pool | pass s | core-set s | core-set peak MiB | BADGE s | BADGE peak MiB "
          "| embeddings MiB | N x C*D float32 MiB (never built) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, t_fp, t_core, m_core, t_badge, m_badge, emb, full_g in rows:
        print(f"| {n:,} | {t_fp:.2f} | {t_core:.3f} | {m_core:.1f} | {t_badge:.3f} "
              f"| {m_badge:.1f} | {emb:.1f} | {full_g:.1f} |")
    first = rows[0]
    print(f"\nGrowth relative to {first[0]:,} images (linear = the pool ratio):\n")
    print("| pool | pool ratio | pass | core-set | BADGE |\n| ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row[0]:,} | {row[0] / first[0]:.0f}x | {row[1] / first[1]:.1f}x "
              f"| {row[2] / first[2]:.1f}x | {row[4] / first[4]:.1f}x |")
    print(f"\nProcess peak RSS (ru_maxrss): "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
