"""Variants of one run over seeds, compared by paired tests against a reference variant.

Three studies (issues 22, 26 and 23), each a set of variants (extra overrides) run once per seed
with ``python -m al_sim.run`` (no MLflow: the run dirs' ``metrics.csv`` are read back):

- ``multilabel``: strategies on the synthetic multi-label default (``dataset=synthetic_chest``),
  macro-AUROC AULC, each against ``random``;
- ``readers``: k = 1, 2, 3 simulated readers (``oracle=panel``) on the screening default,
  balanced-accuracy AULC, expert hours, AULC per expert hour, and balanced accuracy at equal
  expert time (the 1-reader run's final hours), each against one reader;
- ``volumes``: strategies on the 3D synthetic default (``dataset=synthetic_volume``, ``cnn3d``),
  AUROC AULC, each against ``random``, on a pool, test set and training sized for a shared
  2-core CPU (``VOLUME_SIZES``).

    python benchmarks/paired_study.py multilabel --seeds 0,1,2,3,4 --parallel 2 --out DIR
    python benchmarks/paired_study.py readers --seeds 0,1,2,3,4 --parallel 2 --out DIR
    python benchmarks/paired_study.py volumes --seeds 0,1,2,3,4 --parallel 2 --out DIR [--side 28]
    python benchmarks/paired_study.py --smoke   # each study: two tiny runs (the test suite)
"""

from __future__ import annotations

import argparse
import csv
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from al_sim.maths.aulc import aulc
from al_sim.report.stats import paired_test

# The budget of both studies: 50 initial labels, then 6 rounds of 50 (7 points, 50..350).
BUDGET = ["budget.initial=50", "budget.query_size=50", "budget.rounds=6"]
SMOKE = ["budget=tiny", "budget.rounds=1", "dataset.n_pool=120", "dataset.n_test=60",
         "trainer.epochs=1", "trainer.min_steps=1"]
SECONDS = "cost/expert_seconds"
# The volume study's sizes: 16^3 volumes (also in --smoke), 20 initial labels, then 3 rounds
# of 20 (4 points, 20..80) on a 200-volume pool, 100 test volumes; 5 epochs of batches of 16
# (at least 10 steps). At 28^3 one run of these sizes took over 12 minutes at nice 19 on the
# shared 2-core VM (load 12-14); 40 steps of the default batch (64) on 40 labels, 6 minutes.
# AUROC, not balanced accuracy: at these sizes the model calls most test volumes normal, so
# balanced accuracy stays near 0.5 on every run (BENCHMARKS.md, issue 23).
VOLUME_SIDE = "dataset.image_size=16"
VOLUME_SIZES = ["dataset.n_pool=200", "dataset.n_test=100", "budget.initial=20",
                "budget.query_size=20", "budget.rounds=3", "trainer.epochs=5",
                "trainer.min_steps=10", "trainer.batch_size=16"]

# One screening reader (normal, benign, malignant; rows: true class, columns: the answer).
# Malignant: sensitivity 0.869, normal: specificity 0.889 (Lehman et al., Radiology 2017,
# BCSC benchmarks for digital screening mammography); how misses and false recalls split
# between the other two classes, and the benign row, are assumptions. 240 s per image:
# about 4 minutes per digital screening exam (Haygood et al., AJR 2009).
READER = ("confusion:[[0.889,0.080,0.031],[0.120,0.800,0.080],[0.091,0.040,0.869]],"
          "seconds_per_image:240")


def panel(k: int, adjudicator: bool = False) -> list[str]:
    """``oracle=panel`` with ``k`` identical, independent readers (and a third who arbitrates)."""
    names = [f"r{i + 1}" for i in range(k + adjudicator)]
    listed = ",".join(f"{{name:{n},{READER}}}" for n in names)
    return ["oracle=panel", f"oracle.annotators=[{listed}]"] + (
        [f"oracle.adjudicator={names[-1]}"] if adjudicator else [])


STUDIES: dict[str, dict] = {
    "multilabel": {
        "base": ["dataset=synthetic_chest", *BUDGET], "metric": "test/auroc",
        "reference": "random",
        "variants": {s: [f"strategy={s}"] for s in
                     ("random", "entropy", "bald", "cvirs", "coreset", "badge")}},
    "readers": {
        "base": ["dataset=synthetic", "strategy=entropy", *BUDGET],
        "metric": "test/balanced_accuracy", "reference": "k=1",
        "variants": {"k=1": panel(1), "k=2": panel(2), "k=2+arbiter": panel(2, True),
                     "k=3": panel(3)}},
    "volumes": {
        "base": ["dataset=synthetic_volume", VOLUME_SIDE, *VOLUME_SIZES],
        "metric": "test/auroc",
        "reference": "random",
        "variants": {s: [f"strategy={s}"] for s in
                     ("random", "entropy", "margin", "bald", "badge", "coreset")}},
}


def safe(variant: str) -> str:
    """A variant's name as a folder name Hydra's override grammar takes (no '=' or '+')."""
    return variant.replace("=", "").replace("+", "_")


def read_run(run_dir: Path, metric: str) -> dict[str, np.ndarray]:
    """Labelled counts, the metric and (where logged) cumulative expert seconds per round."""
    with (run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    out = {"n": np.array([float(r["n_labeled"]) for r in rows]),
           "y": np.array([float(r[metric]) for r in rows])}
    if rows and rows[0].get(SECONDS):
        out["s"] = np.array([float(r[SECONDS]) for r in rows])
    return out


def run_all(study: dict, seeds: list[int], parallel: int, work: Path,
            extra: list[str]) -> dict[str, dict[int, dict[str, np.ndarray]]]:
    """Every (variant, seed) run, ``parallel`` at a time, one torch thread each."""
    jobs = [(v, s) for s in seeds for v in study["variants"]]  # interleaved: same load
    results: dict[str, dict[int, dict[str, np.ndarray]]] = {v: {} for v in study["variants"]}
    running: list[tuple[str, int, subprocess.Popen, Path]] = []
    while jobs or running:
        while jobs and len(running) < parallel:
            v, s = jobs.pop(0)
            run_dir = work / f"{safe(v)}-seed{s}"
            if (run_dir / "done").exists():  # a re-run of the study reuses finished runs
                results[v][s] = read_run(run_dir, study["metric"])
                continue
            cmd = [sys.executable, "-m", "al_sim.run", *study["base"], *study["variants"][v],
                   f"seed={s}", "trainer.num_threads=1", "progress=false",
                   "tracking.enabled=false", f"hydra.run.dir={run_dir}", *extra]
            log = (work / f"{safe(v)}-seed{s}.log").open("w")
            running.append((v, s, subprocess.Popen(cmd, cwd=work, stdout=log,
                                                   stderr=subprocess.STDOUT), run_dir))
        time.sleep(0.5)
        for v, s, proc, run_dir in [r for r in running if r[2].poll() is not None]:
            running.remove((v, s, proc, run_dir))
            if proc.returncode != 0:
                tail = (work / f"{safe(v)}-seed{s}.log").read_text().splitlines()[-5:]
                print(f"{v} seed {s} failed (exit {proc.returncode}):", *tail, sep="\n  ")
                continue
            (run_dir / "done").touch()
            results[v][s] = read_run(run_dir, study["metric"])
    return results


def at_seconds(run: dict[str, np.ndarray], seconds: float) -> float:
    """The run's metric at ``seconds`` of expert time (linear between rounds; NaN outside)."""
    s = run["s"]
    return float(np.interp(seconds, s, run["y"])) if s[0] <= seconds <= s[-1] else math.nan


def pm(values: list[float], fmt: str = ".4f") -> str:
    """``mean ± std`` (sample std) of the finite values."""
    v = np.array([x for x in values if math.isfinite(x)])
    if len(v) == 0:
        return "–"
    return format(v.mean(), fmt) + (f" ± {format(v.std(ddof=1), fmt)}" if len(v) > 1 else "")


def test_cells(scores: dict[int, float], reference: dict[int, float]) -> str:
    """``Δ mean | paired t p | Wilcoxon p`` over the seeds both have."""
    t = paired_test({str(k): v for k, v in scores.items()},
                    {str(k): v for k, v in reference.items()})
    return f"{t.mean_diff:+.4f} | {t.t_p:.3g} | {t.wilcoxon_p:.3g}"


def table(study: dict, results: dict[str, dict[int, dict[str, np.ndarray]]]) -> list[str]:
    """The study's markdown table, variants by AULC, best first."""
    ref = study["reference"]
    area = {v: {s: aulc(r["n"], r["y"]) for s, r in runs.items()} for v, runs in results.items()}
    costed = all("s" in r for runs in results.values() for r in runs.values()) and results[ref]
    head = ["variant", "seeds", "final", "AULC", "Δ AULC vs ref", "paired t p", "Wilcoxon p"]
    if costed:
        hours = {v: {s: r["s"][-1] / 3600 for s, r in runs.items()} for v, runs in results.items()}
        per_hour = {v: {s: area[v][s] / hours[v][s] for s in runs} for v, runs in results.items()}
        at_t = {v: {s: at_seconds(r, results[ref][s]["s"][-1]) for s, r in runs.items()
                    if s in results[ref]} for v, runs in results.items()}
        head += ["expert hours", "AULC per expert hour", "Δ per hour", "t p", "Wilcoxon p",
                 "at the reference's hours", "Δ at equal time", "t p", "Wilcoxon p"]
    lines = [f"metric {study['metric']}, reference {ref}", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for v in sorted(results, key=lambda v: -np.mean(list(area[v].values()) or [-1.0])):
        runs = results[v]
        cells = [v, str(len(runs)), pm([r["y"][-1] for r in runs.values()]),
                 pm(list(area[v].values())),
                 "– | – | –" if v == ref else test_cells(area[v], area[ref])]
        if costed:
            cells += [pm(list(hours[v].values()), ".2f"), pm(list(per_hour[v].values())),
                      "– | – | –" if v == ref else test_cells(per_hour[v], per_hour[ref]),
                      pm(list(at_t[v].values())),
                      "– | – | –" if v == ref else test_cells(at_t[v], at_t[ref])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def run_study(name: str, seeds: list[int], parallel: int, out: Path | None,
              overrides: list[str], smoke: bool, only: list[str] | None = None,
              side: int | None = None) -> int:
    """Run study ``name`` (``only`` these variants and the reference) and print its table;
    the number of runs that failed."""
    study = dict(STUDIES[name])
    if side is not None and not smoke:  # the volume side (the study's 16^3 by default)
        study["base"] = [f"dataset.image_size={side}" if o == VOLUME_SIDE else o
                         for o in study["base"]]
    if only:
        unknown = sorted(set(only) - set(study["variants"]))
        if unknown:
            raise SystemExit(f"error: unknown variant(s) {', '.join(unknown)} of study {name}; "
                             f"choose from {', '.join(study['variants'])}")
        study["variants"] = {v: o for v, o in study["variants"].items()
                             if v in only or v == study["reference"]}
    if smoke:
        ref = study["reference"]
        other = next(v for v in study["variants"] if v != ref)
        study["variants"] = {v: study["variants"][v] for v in (ref, other)}
        study["base"] = [o for o in study["base"] if o not in BUDGET and o not in VOLUME_SIZES]
        overrides = [*SMOKE, *study.get("smoke", []), *overrides]
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = (out or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        results = run_all(study, seeds, parallel, work, overrides)
    print(f"study {name}: {len(study['variants'])} variants x seeds "
          f"{','.join(map(str, seeds))}, {parallel} runs at once, "
          f"{time.perf_counter() - began:.0f} s; overrides: "
          f"{' '.join(study['base'] + overrides)}")
    print("\n".join(table(study, results)), end="\n\n")
    return sum(len(seeds) - len(runs) for runs in results.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", choices=sorted(STUDIES),
                        help="which study (--smoke without one: both)")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--parallel", type=int, default=2, help="runs at once")
    parser.add_argument("--variants", default=None,
                        help="a comma-separated subset of the study's variants (the reference "
                             "is always run)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder of the run dirs (kept; finished runs are reused)")
    parser.add_argument("--side", type=int, default=None,
                        help="volumes: voxels a side (default 16; the dataset's own is 28)")
    parser.add_argument("--smoke", action="store_true",
                        help="two variants, one seed, tiny sizes: seconds (the tests)")
    args, overrides = parser.parse_known_args()
    if args.study is None and not args.smoke:
        parser.error("name a study: " + " | ".join(sorted(STUDIES)))
    names = [args.study] if args.study else sorted(STUDIES)
    seeds = [0] if args.smoke else [int(s) for s in args.seeds.split(",")]
    only = args.variants.split(",") if args.variants else None
    failed = sum(run_study(n, seeds, args.parallel, args.out and args.out / n, overrides,
                           args.smoke, only, args.side) for n in names)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
