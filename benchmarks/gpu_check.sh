#!/usr/bin/env bash
# GPU figures of issue 11/16 in one go, on a bare GPU machine (about 5 minutes on one H100
# expected; every step is bounded, worst case 9.5 minutes).
#
#   bash benchmarks/gpu_check.sh            # from the repository root
#
# Steps (each with its own timeout; a failing step is reported and the next one runs):
#   0. environment: python, torch + CUDA, the GPU; al_sim importable (pip install -e . when it
#      is not and pip can reach an index or $WHEELHOUSE, else PYTHONPATH=repo root)
#   1. pool scoring vs the naive loop, fp32, with the conv ceiling in the same interleaving:
#      simple_cnn/resnet18 x 28/64 px, resnet18 128 px
#   2. the same in bf16 (the naive loop stays fp32)
#   3. a default-budget ResNet-18 run on 128 px synthetic images: share of wall time in
#      training / pool scoring / evaluation (benchmarks/round_overhead.py)
#   4. two same-seed CUDA runs: hashes of queries.csv and metrics.csv (time columns dropped),
#      then the same with trainer.deterministic=false, for its speed
#   5. the GPU pytest subset (tests/test_device.py, the cuda case of tests/test_bad_input.py)
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
FAILED=()

same_seed() {  # same_seed TAG OVERRIDES...: two runs, their hashes, identical or not
  local tag=$1
  shift
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

# ---------------------------------------------------------------- 1-2. pool scoring
ROWS=simple_cnn:28,simple_cnn:64,resnet18:28,resnet18:64,resnet18:128
step pool_scoring_fp32 100 $PY benchmarks/pool_scoring.py --device cuda --pool 65536 \
  --rows "$ROWS" --batches 256,1024,4096 --fused 0,1 --repeats 5
step pool_scoring_bf16 50 $PY benchmarks/pool_scoring.py --device cuda --pool 65536 \
  --rows "$ROWS" --batches 1024,4096 --fused 1 --repeats 3 --precision bf16

# ---------------------------------------------------------------- 3. time split of a real run
step resnet18_128px_default_budget 180 $PY benchmarks/round_overhead.py model=resnet18 \
  dataset.image_size=128 trainer.device=cuda $TRACK

# ---------------------------------------------------------------- 4. same seed twice
# ---------------------------------------------------------------- 4. same seed twice
step same_seed_deterministic 60 bash "$0" --same-seed det
step same_seed_nondeterministic 45 bash "$0" --same-seed nondet trainer.deterministic=false

# ---------------------------------------------------------------- 5. GPU tests
step pytest_gpu 100 $PY -m pytest -q -p no:cacheprovider tests/test_device.py

echo
echo "=== done in $(( $(date +%s) - BEGAN )) s; outputs in $LOG ==="
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "FAILED steps: ${FAILED[*]}"
  exit 1
fi
echo "all steps passed"
