#!/usr/bin/env bash
# GPU figures of issue 11 in one go, on a bare GPU machine (about 6 minutes on one H100;
# every step is bounded, and a step that would end past $GPU_CHECK_BUDGET_S, default 540 s,
# is skipped and listed).
#
#   bash benchmarks/gpu_check.sh            # from the repository root
#
#   GPU_CHECK_ONLY="name name ..." bash benchmarks/gpu_check.sh   # only these steps
#
# Steps, most wanted first (each with its own timeout; a failing step is reported and the
# next one runs):
#   0. environment: python, torch + CUDA, the GPU; al_sim importable (pip install -e . when it
#      is not and pip can reach an index or $WHEELHOUSE, else PYTHONPATH=repo root)
#   1. warm_imports: the heavy imports once (torch, torchvision, torch._dynamo, ...), timed
#      (the first process on a fresh machine also reads them from a cold disk cache); then
#      a default-budget ResNet-18 run on 128 px synthetic images: share of wall time in
#      training / pool scoring / evaluation, and where the rest goes (round_overhead.py)
#   2. bf16 vs fp32: AULC of the same run over 5 seeds, paired (precision_aulc.py)
#   3. two same-seed CUDA runs: hashes of queries.csv and metrics.csv (time columns dropped)
#   4. the GPU pytest subset (tests/test_device.py)
#   5. pool scoring vs the naive loop, fp32: simple_cnn/resnet18 x 28/64 px, resnet18 128 px
#   6. two same-seed runs with trainer.deterministic=false, for its speed (they may differ)
# Every output goes to stdout and, when $OUT is set, to $OUT/gpu_check/*.txt.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
LOG=${OUT:-/tmp}/gpu_check
mkdir -p "$LOG"
WORK=${GPU_CHECK_WORK:-$(mktemp -d)}
export GPU_CHECK_WORK=$WORK
BEGAN=$(date +%s)
BUDGET_S=${GPU_CHECK_BUDGET_S:-540}
FAILED=()
SKIPPED=()

same_seed() {  # same_seed TAG identical|any OVERRIDES...: two runs, their hashes
  local tag=$1 expect=$2
  shift 2
  for i in 1 2; do
    local t0=$SECONDS
    (cd "$WORK" && $PY -m al_sim.run budget=tiny seed=5 strategy=bald trainer.device=${GPU_CHECK_DEVICE:-cuda} $TRACK \
      progress=false hydra.run.dir="$WORK/$tag$i" "$@" > "$WORK/$tag$i.log" 2>&1) \
      || { echo "run $tag$i failed:"; tail -5 "$WORK/$tag$i.log"; return 1; }
    echo "run $tag$i: $(( SECONDS - t0 )) s wall (whole process)"
  done
  $PY - "$WORK/${tag}1" "$WORK/${tag}2" <<'EOF'
import csv, hashlib, sys
def hashes(d):
    q = hashlib.sha256(open(f"{d}/queries.csv", "rb").read()).hexdigest()[:16]
    rows = list(csv.reader(open(f"{d}/metrics.csv")))
    keep = [i for i, h in enumerate(rows[0]) if not h.startswith("time/")]
    m = hashlib.sha256("\n".join(",".join(r[i] for i in keep) for r in rows).encode()).hexdigest()[:16]
    return q, m
a, b = hashes(sys.argv[1]), hashes(sys.argv[2])
print(f"run 1: queries {a[0]} metrics {a[1]}")
print(f"run 2: queries {b[0]} metrics {b[1]}")
print("IDENTICAL" if a == b else "DIFFERENT")
sys.exit(0 if a == b else 1)
EOF
  local rc=$?
  [ "$expect" = any ] && return 0
  return $rc
}
if [ "${1:-}" = "--same-seed" ]; then  # the step below re-enters here under its timeout
  shift
  export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
  same_seed "$@"
  exit $?
fi

step() {  # step NAME TIMEOUT_S COMMAND...: run, tee into $LOG/NAME.txt, note a failure
  local name=$1 limit=$2
  shift 2
  if [ -n "${GPU_CHECK_ONLY:-}" ] && [[ " $GPU_CHECK_ONLY " != *" $name "* ]]; then
    return
  fi
  if [ $(( $(date +%s) - BEGAN + limit )) -gt "$BUDGET_S" ]; then
    echo "--- $name skipped: its ${limit}s limit would end past the ${BUDGET_S}s budget"
    SKIPPED+=("$name")
    return
  fi
  echo
  echo "=== $name (limit ${limit}s, $(date -u +%H:%M:%S) UTC, $(( $(date +%s) - BEGAN )) s in) ==="
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$LOG/$name.txt"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    echo "!!! step $name FAILED (exit $rc$([ "$rc" -eq 124 ] && echo ', timed out'))" | tee -a "$LOG/$name.txt"
    FAILED+=("$name")
  fi
}

# ---------------------------------------------------------------- 0. environment
echo "=== environment ==="
$PY - <<'EOF' 2>&1 | tee "$LOG/environment.txt"
import platform, sys
print("python", sys.version.split()[0], platform.machine())
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print("gpu", p.name, f"{p.total_memory / 2**30:.1f} GiB", "count", torch.cuda.device_count())
except Exception as exc:  # noqa: BLE001
    print("torch missing or broken:", exc)
EOF
nvidia-smi --query-gpu=name,memory.total,memory.used,utilization.gpu --format=csv 2>&1 | tee -a "$LOG/environment.txt"
if ! $PY -c "import al_sim.run, hydra, sklearn, torchvision" 2>/dev/null; then
  echo "al_sim or its dependencies not importable: trying pip install -e ."
  if [ -n "${WHEELHOUSE:-}" ] && [ -d "$WHEELHOUSE" ]; then
    timeout 240 $PY -m pip install -q --no-index --find-links "$WHEELHOUSE" -e . 2>&1 | tail -3
  else
    timeout 240 $PY -m pip install -q -e . 2>&1 | tail -3
  fi
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
# without mlflow (a bare GPU image) the runs log to their run dirs only
TRACK=""
$PY -c "import mlflow" 2>/dev/null || { TRACK="tracking.enabled=false"; echo "no mlflow: $TRACK"; }
export TRACK
if $PY -c "import al_sim.run, hydra, sklearn" > "$LOG/imports.txt" 2>&1; then
  echo "al_sim importable"
else
  tail -1 "$LOG/imports.txt"
  echo "!!! al_sim still not importable: the steps below will fail"
  FAILED+=(imports)
fi
$PY -c "import pytest" 2>/dev/null || timeout 60 $PY -m pip install -q pytest 2>&1 | tail -1

# ---------------------------------------------------------------- 1. time split of a real run
step warm_imports 60 $PY -c "
import time
t = time.perf_counter()
import torch, torch._dynamo, torchvision, sklearn.metrics, scipy.stats, matplotlib.pyplot, hydra
print(f'heavy imports (first time on this machine): {time.perf_counter() - t:.1f} s')"
step resnet18_128px_default_budget 100 $PY benchmarks/round_overhead.py model=resnet18 \
  dataset.image_size=128 trainer.device=cuda $TRACK

# ---------------------------------------------------------------- 2. bf16 vs fp32 AULC
step precision_aulc 200 $PY benchmarks/precision_aulc.py --seeds 0,1,2,3,4 \
  --precisions fp32,bf16 --parallel 5 -- model=resnet18 dataset.image_size=128 trainer.device=cuda

# ---------------------------------------------------------------- 3. same seed twice
step same_seed_deterministic 70 bash "$0" --same-seed det identical

# ---------------------------------------------------------------- 4. GPU tests
step pytest_gpu 100 $PY -m pytest -q -p no:cacheprovider -o addopts="" tests/test_device.py

# ---------------------------------------------------------------- 5. pool scoring
ROWS=simple_cnn:28,simple_cnn:64,resnet18:28,resnet18:64,resnet18:128
step pool_scoring_fp32 60 $PY benchmarks/pool_scoring.py --device cuda --pool 65536 \
  --rows "$ROWS" --batches 1024,4096 --fused 0 --repeats 3

# ---------------------------------------------------------------- 6. the fast opt-out
step same_seed_nondeterministic 70 bash "$0" --same-seed nondet any trainer.deterministic=false

echo
echo "=== done in $(( $(date +%s) - BEGAN )) s; outputs in $LOG ==="
[ ${#SKIPPED[@]} -gt 0 ] && echo "skipped (time budget): ${SKIPPED[*]}"
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "FAILED steps: ${FAILED[*]}"
  exit 1
fi
echo "all steps that ran passed"
