#!/usr/bin/env bash
# Issue 24 on one GPU: one round of 30 members in lock-step vs one by one
# (benchmarks/lockstep_train.py), then the 30-run experiment=screening study (6 strategies x
# 5 seeds) stacked in lock-step and sequentially (hydra/launcher=al_stack, stack_size=auto)
# against one run per task (al_joblib with k jobs
# sharing the GPU, k in $STACK_GPU_K), for SimpleCNN and ResNet-18 at 28 px. Every sweep is
# bounded; a step that would end past $STACK_GPU_BUDGET_S (default 450 s) is skipped and
# listed, so the whole script stays under 8 minutes.
#
#   bash benchmarks/stack_gpu.sh                 # from the repository root, on the GPU machine
#   STACK_GPU_STUDY="budget.rounds=3" bash benchmarks/stack_gpu.sh   # a shorter study
#   STACK_GPU_MODELS=simple_cnn STACK_GPU_K="2 4 8" bash benchmarks/stack_gpu.sh
#
# Prints per sweep: wall time, FINISHED runs, mean/max GPU utilisation and peak GPU memory
# (nvidia-smi, sampled every second), and the stack's measured MiB per member; then the
# throughput ratio stacked / best joblib per model (runs finished per second). Outputs also go to $OUT/stack_gpu/ when $OUT is set.
# Not yet run on a GPU (written on a CPU-only machine).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
LOG=${OUT:-/tmp}/stack_gpu
mkdir -p "$LOG"
BEGAN=$(date +%s)
BUDGET_S=${STACK_GPU_BUDGET_S:-450}
STEP_S=${STACK_GPU_STEP_S:-120}
KS=${STACK_GPU_K:-"2 4"}
STUDY=${STACK_GPU_STUDY:-"budget.rounds=4"}
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
SKIPPED=()

"$PY" -c "import torch, al_sim; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$LOG/env.txt"

sweep() {  # sweep NAME MODEL LAUNCHER-OVERRIDES...: one bounded sweep, its figures
  local name=$1 model=$2
  shift 2
  local left=$((BUDGET_S - ($(date +%s) - BEGAN)))
  if [ "$left" -lt "$STEP_S" ]; then SKIPPED+=("$name"); echo "$name: skipped (time)"; return; fi
  local dir
  dir=$(mktemp -d)
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 1000 \
    > "$dir/smi.csv" 2>/dev/null &
  local smi=$!
  local start
  start=$(date +%s.%N)
  (cd "$dir" && timeout "$STEP_S" "$PY" -m al_sim.run -m experiment=screening "model=$model" \
    trainer.device=cuda progress=false hydra.sweep.dir=sweep $STUDY "$@" > out.txt 2> err.txt)
  local rc=$?
  local wall
  wall=$(echo "$(date +%s.%N) - $start" | bc)
  kill "$smi" 2>/dev/null
  local finished
  finished=$(cat "$dir"/sweep/*/run.log 2>/dev/null | grep -c "finished: AULC")
  local util
  util=$(awk -F', ' '{u+=$1; if ($1>m) m=$1; if ($2>g) g=$2; n++} END {if (n) printf "util mean %.0f%% max %d%%, peak memory %d MiB", u/n, m, g}' "$dir/smi.csv")
  local member
  member=$(grep -o "[0-9.]* MiB per member -> [0-9]* per stack" "$dir/out.txt" | head -1)
  printf '%s: rc %s, %.1f s, %s runs finished, %s %s\n' "$name" "$rc" "$wall" "$finished" \
    "$util" "$member" | tee -a "$LOG/figures.txt"
  cp "$dir/err.txt" "$LOG/$name.err.txt" 2>/dev/null
  echo "$finished $wall" | awk '{printf "%.4f\n", $1 / $2}' > "$LOG/$name.rate"  # runs per s
}

for model in ${STACK_GPU_MODELS:-simple_cnn resnet18}; do  # one round, 30 members: seconds
  timeout 90 "$PY" benchmarks/lockstep_train.py --model "$model" --device cuda --members 30 \
    --reps 3 2>&1 | tee -a "$LOG/figures.txt"
done

for model in ${STACK_GPU_MODELS:-simple_cnn resnet18}; do
  sweep "$model-lockstep" "$model" hydra/launcher=al_stack hydra.launcher.n_jobs=1 \
    hydra.launcher.stack_size=auto hydra.launcher.lockstep=true
  sweep "$model-stacked" "$model" hydra/launcher=al_stack hydra.launcher.n_jobs=1 \
    hydra.launcher.stack_size=auto
  for k in $KS; do
    sweep "$model-joblib$k" "$model" hydra/launcher=al_joblib "hydra.launcher.n_jobs=$k"
  done
done

# Runs finished per second (a sweep cut at STACK_GPU_STEP_S still counts what it finished).
for model in ${STACK_GPU_MODELS:-simple_cnn resnet18}; do
  best=$(cat "$LOG/$model"-joblib*.rate 2>/dev/null | sort -g | tail -1)
  for mode in lockstep stacked; do
    [ -f "$LOG/$model-$mode.rate" ] && [ -n "$best" ] || continue
    awk -v s="$(cat "$LOG/$model-$mode.rate")" -v b="$best" -v m="$model" -v d="$mode" \
      'BEGIN {if (b > 0) printf "%s: %s %.3f runs/s, best joblib %.3f runs/s: %.2fx\n", m, d, s, b, s / b}' \
      | tee -a "$LOG/figures.txt"
  done
done
[ ${#SKIPPED[@]} -eq 0 ] || echo "skipped (time): ${SKIPPED[*]}"
