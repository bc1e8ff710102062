#!/usr/bin/env bash
# The one-shot GPU check of the Triton backend (issue 11), for a session that has a CUDA GPU.
# In order of priority, each step under its own time limit and all of them under one budget of
# BUDGET seconds (default 510: about 8.5 minutes; a step gets what is left, and one that would
# get under 20 s is skipped and says so):
#   1. tests_stage_a (90 s): tests/kernels/test_triton_cuda.py, the compiled Stage A kernels
#      against the reference on the GPU (every LSTM variant, the RNN, 16-bit, bit-identical
#      gradients);
#   2. tests_stage_b (90 s): the same file's LSTM tests with CELLSTATE_TRITON_STAGE=B, i.e.
#      through the persistent kernels (Stage B; H=67 fits it, 37 rows make 10 programs of 4
#      rows in float32, 3 of 16 in 16-bit): the plain, layer-norm and "everything" variants
#      (every kernel flag), 16-bit, bit-identical gradients;
#   3. stages (100 s): benchmarks/gpu.py --stages, Stage A vs Stage B vs torch.nn.LSTM at
#      1000x32x2x128 (fp32, fp32-tf32, bf16), 1000x32x2x256 bf16 and layer_norm 1000x32x2x128
#      fp32, with a line per shape saying which stage wins;
#   4. benchmark (180 s): cellstate bench --device cuda, the issue's table and targets;
#   5. the adding task at T=1000 on the GPU against 2 CPU cores of that machine (build 45 s,
#      then 40 s and 50 s).
# The benchmarks write their JSON after every measurement, so a step cut short keeps what it
# measured. Writes machine.txt, log.txt (every step's output), stages.json, gpu.json and
# summary.txt (each step's exit status and time, which stage wins, the targets met or MISSED,
# the adding runs' results).
#
#   bash benchmarks/gpu_check.sh [--dry-run] [OUTDIR]   (default: $OUT, else ./gpu-check)
#
# --dry-run prints each step's command and time limit instead of running it (a check on CPU).
set -u
cd "$(dirname "$0")/.."
DRY=0
if [ "${1:-}" = "--dry-run" ]; then
  DRY=1
  shift
fi
DIR=${1:-${OUT:-gpu-check}}
RUNS=$(mktemp -d)  # the training runs' directories (checkpoints): not copied back
mkdir -p "$DIR"
PY=${PYTHON:-python3}
BUDGET=${BUDGET:-510}
export PYTHONUNBUFFERED=1
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
export TRITON_INTERPRET=0

step() {  # step NAME SECONDS COMMAND...: run within the budget, append to log.txt, note status
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - SECONDS))
  if [ "$left" -lt "$limit" ]; then limit=$left; fi
  if [ "$limit" -lt 20 ]; then
    echo "$name: skipped, ${left} s of the ${BUDGET} s budget left" | tee -a "$DIR/summary.txt"
    return
  fi
  if [ "$DRY" = 1 ]; then
    echo "$name (limit $limit s): $*" | tee -a "$DIR/summary.txt"
    return
  fi
  local start=$SECONDS
  echo "===== $name: $*" >>"$DIR/log.txt"
  timeout "$limit" "$@" >>"$DIR/log.txt" 2>&1
  local rc=$?
  echo "$name: exit $rc after $((SECONDS - start)) s (limit $limit s)" | tee -a "$DIR/summary.txt"
}

STAGE_OF_TESTS="from cellstate.kernels.triton.lstm_ops import stage_for as s
print('CELLSTATE_TRITON_STAGE=B runs the CUDA tests\' shape on Stage', s((7, 37, 67, 67)))"
if [ "$DRY" = 0 ]; then
  { nvidia-smi; uptime; "$PY" -m cellstate.cli.main info; } >"$DIR/machine.txt" 2>&1
  CELLSTATE_TRITON_STAGE=B "$PY" -c "$STAGE_OF_TESTS" >>"$DIR/summary.txt" 2>&1
fi
CUDA_TESTS=(-m pytest -q -x -p no:cacheprovider tests/kernels/test_triton_cuda.py)
step tests_stage_a 90 "$PY" "${CUDA_TESTS[@]}"
# Stage B: the variants that together set every kernel flag (each compiles two large kernels)
CELLSTATE_TRITON_STAGE=B step tests_stage_b 90 "$PY" "${CUDA_TESTS[@]}" \
  -k "plain or everything or layer_norm or 16_bit or bit_identical"
step stages 100 "$PY" benchmarks/gpu.py --stages --out "$DIR/stages.json"
if [ -f "$DIR/stages.json" ]; then
  "$PY" -c "import json,sys; print('\n'.join(json.load(open(sys.argv[1])).get('winners', [])))" \
    "$DIR/stages.json" >>"$DIR/summary.txt" 2>&1
fi
step benchmark 180 "$PY" -m cellstate.cli.main bench --device cuda --out "$DIR/gpu.json"
if [ -f "$DIR/gpu.json" ]; then
  "$PY" -m cellstate.cli.main bench --verdicts "$DIR/gpu.json" >>"$DIR/summary.txt" 2>&1
fi
# The adding task at T=1000, the same budget on the GPU and on 2 CPU cores (taskset). The CPU
# kernel is built first, so that its compile is not in the CPU run's training seconds (the
# Triton kernels' first compile is in the GPU run's).
step build_cpu_kernel 45 "$PY" -c "from cellstate.kernels.cpu import build; build.load()"
TRAIN=(-m cellstate.cli.main train --task adding --length 1000 --max-sequences 512 --quiet)
step adding_cuda 40 "$PY" "${TRAIN[@]}" --device cuda --out "$RUNS/cuda"
OMP_NUM_THREADS=2 step adding_cpu2 50 taskset -c 0,1 "$PY" "${TRAIN[@]}" --device cpu \
  --out "$RUNS/cpu2"
for run in cuda cpu2; do
  if [ -f "$RUNS/$run/result.json" ]; then
    echo "adding T=1000 on $run: $(cat "$RUNS/$run/result.json")" >>"$DIR/summary.txt"
  fi
done
if [ "$DRY" = 0 ]; then cat "$DIR/summary.txt"; fi
