#!/usr/bin/env bash
# The one-shot GPU check of the Triton backend (issue 11), for a session that has a CUDA GPU:
# the CUDA differential tests, the benchmark (cellstate bench --device cuda) and the adding task
# at T=1000 on the GPU against 2 CPU cores. At most 8 minutes: every step has its own time limit,
# and the benchmark writes its JSON after every measurement, so a step that runs out of time
# keeps what it measured. Writes 4 files: machine.txt, log.txt (every step's output),
# gpu.json (the benchmark) and summary.txt (each step's exit status and time, the targets met
# or MISSED, the adding runs' results).
#
#   bash benchmarks/gpu_check.sh [OUTDIR]        (default: $OUT, else ./gpu-check)
set -u
cd "$(dirname "$0")/.."
DIR=${1:-${OUT:-gpu-check}}
RUNS=$(mktemp -d)  # the training runs' directories (checkpoints): not copied back
mkdir -p "$DIR"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
export TRITON_INTERPRET=0

step() {  # step NAME SECONDS COMMAND...: run with a time limit, append to log.txt, note status
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  echo "===== $name: $*" >>"$DIR/log.txt"
  timeout "$limit" "$@" >>"$DIR/log.txt" 2>&1
  local rc=$?
  echo "$name: exit $rc after $((SECONDS - start)) s (limit $limit s)" | tee -a "$DIR/summary.txt"
}

{ nvidia-smi; uptime; "$PY" -m cellstate.cli.main info; } >"$DIR/machine.txt" 2>&1
step tests 100 "$PY" -m pytest -q -x -p no:cacheprovider tests/kernels/test_triton_cuda.py
step benchmark 210 "$PY" -m cellstate.cli.main bench --device cuda --out "$DIR/gpu.json"
"$PY" -m cellstate.cli.main bench --verdicts "$DIR/gpu.json" >>"$DIR/summary.txt" 2>&1
# The adding task at T=1000, the same budget on the GPU and on 2 CPU cores (taskset). The CPU
# kernel is built first, so that its compile is not in the CPU run's training seconds (the
# Triton kernels' first compile is in the GPU run's).
step build_cpu_kernel 60 "$PY" -c "from cellstate.kernels.cpu import build; build.load()"
TRAIN=(-m cellstate.cli.main train --task adding --length 1000 --max-sequences 512 --quiet)
step adding_cuda 45 "$PY" "${TRAIN[@]}" --device cuda --out "$RUNS/cuda"
OMP_NUM_THREADS=2 step adding_cpu2 60 taskset -c 0,1 "$PY" "${TRAIN[@]}" --device cpu \
  --out "$RUNS/cpu2"
for run in cuda cpu2; do
  echo "adding T=1000 on $run: $(cat "$RUNS/$run/result.json" 2>&1)" >>"$DIR/summary.txt"
done
cat "$DIR/summary.txt"
