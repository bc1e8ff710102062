#!/usr/bin/env bash
# The one-shot GPU check of the Triton backend (issue 11), for a session that has a CUDA GPU:
# the CUDA differential tests, the benchmark (benchmarks/gpu.py) and the adding task at T=1000
# on the GPU against 2 CPU cores. About 8 minutes; every step has its own time limit and writes
# its output as it goes, so a step that runs out of time keeps what it measured.
#
#   bash benchmarks/gpu_check.sh [OUTDIR]        (default: $OUT, else ./gpu-check)
set -u
cd "$(dirname "$0")/.."
DIR=${1:-${OUT:-gpu-check}}
mkdir -p "$DIR"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
export TRITON_INTERPRET=0

step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $DIR/NAME.txt, note the status
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout "$limit" "$@" >"$DIR/$name.txt" 2>&1
  local rc=$?
  echo "$name: exit $rc after $((SECONDS - start)) s" | tee -a "$DIR/summary.txt"
}

{ nvidia-smi; uptime; } >"$DIR/machine.txt" 2>&1
step info 60 "$PY" -m cellstate.cli.main info
step tests 150 "$PY" -m pytest -q -x -p no:cacheprovider tests/kernels/test_triton_cuda.py
step benchmark 270 "$PY" -m cellstate.cli.main bench --device cuda --repeats 5 --out "$DIR/gpu.json"
# The adding task at T=1000 with the same budget: training seconds (result.json) on the GPU
# and on 2 CPU cores; the CPU kernel is built first so that its compile is not counted.
step build_cpu_kernel 240 "$PY" -c "from cellstate.kernels.cpu import build; build.load()"
TRAIN=(-m cellstate.cli.main train --task adding --length 1000 --max-sequences 1024 --quiet --force)
step adding_cuda 60 "$PY" "${TRAIN[@]}" --device cuda --out "$DIR/adding-cuda"
OMP_NUM_THREADS=2 step adding_cpu2 90 taskset -c 0,1 "$PY" "${TRAIN[@]}" --device cpu \
  --out "$DIR/adding-cpu2"
for run in adding-cuda adding-cpu2; do
  "$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], r)" \
    "$DIR/$run/result.json" "$run" >>"$DIR/summary.txt" 2>&1
done
grep -E "^(met|MISSED)" "$DIR/benchmark.txt" >>"$DIR/summary.txt"
cat "$DIR/summary.txt"
