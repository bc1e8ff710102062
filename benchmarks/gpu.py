"""GPU benchmark: the Triton backend against torch.nn.LSTM (issue 11's shapes and targets).

    python benchmarks/gpu.py --out gpu.json             # = cellstate bench --device cuda
    python benchmarks/gpu.py --smoke                    # tiny, on CPU through the interpreter
    python benchmarks/gpu.py --stages --out stages.json # Stage A vs Stage B vs torch.nn.LSTM
    python benchmarks/gpu.py --stages --smoke           # the same, tiny, on CPU

Without ``--stages`` this is ``cellstate bench --device cuda`` (cellstate/benchmarking/gpu.py).
``--stages`` times, side by side in one process with rounds interleaved (medians of
``--repeats`` after two warm-ups), the two recurrences of the Triton LSTM, selected with
CELLSTATE_TRITON_STAGE around each forward + backward: "A" (a GEMM and a fused kernel per step)
and "B" (the persistent kernels, one launch each way; where its default is 4 batch rows per
program, float32 without TF32, also with 16: CELLSTATE_TRITON_STAGE_B_ROWS), with
torch.nn.LSTM on the same weights for the plain layer, training and inference, at the small
hidden sizes Stage B is for. It writes
JSON after every measurement and ends with one line per shape, dtype and mode saying which stage
wins, by how much, and how the winner compares with torch.nn.LSTM: the figures from which the
default of ``lstm_ops.stage_for`` is to be chosen.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from contextlib import contextmanager

import torch
from torch import nn

import cellstate
from cellstate.benchmarking import gpu as bench_gpu
from cellstate.benchmarking.gpu import PRECISIONS, VARIANTS, Recorder

# lstm_ops.STAGE_VARIABLE and persistent_ops.ROWS_VARIABLE (imported lazily: they need triton)
STAGE_VARIABLE = "CELLSTATE_TRITON_STAGE"
ROWS = "CELLSTATE_TRITON_STAGE_B_ROWS"
STAGE_ROWS = [  # (T, B, D, H), dtype, variant
    ((1000, 32, 2, 128), "fp32", "plain"),
    ((1000, 32, 2, 128), "fp32-tf32", "plain"),
    ((1000, 32, 2, 128), "bf16", "plain"),
    ((1000, 32, 2, 256), "bf16", "plain"),
    ((1000, 32, 2, 128), "fp32", "layer_norm"),
]
SMOKE_ROWS = [((3, 2, 2, 4), "fp32", "plain"), ((3, 2, 2, 4), "fp32", "layer_norm")]


@contextmanager
def environment(values: dict[str, str]):
    """The environment variables ``values`` set inside, restored after."""
    old = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _time(models: dict, x, training: bool, repeats: int, device) -> dict[str, float | str]:
    """Median ms per entry (a model and the environment it runs in), rounds interleaved; an
    entry that raises gives its error message instead (and is not run again)."""
    results: dict[str, float | str] = {}
    times: dict[str, list[float]] = {name: [] for name in models}
    warm_ups = 2 if device.type == "cuda" else 1
    cotangents = {}
    for round_ in range(warm_ups + repeats):
        for name, (model, env) in models.items():
            if isinstance(results.get(name), str):
                continue
            try:
                with environment(env):
                    if name not in cotangents:
                        cotangents[name] = torch.ones_like(bench_gpu._data(model(x)[0]))
                    cotangent = cotangents[name]
                    bench_gpu._sync(device)
                    start = time.perf_counter()
                    bench_gpu._step(model, x, cotangent, training)
                    bench_gpu._sync(device)
            except Exception as error:  # recorded in the row: the other entries still run
                results[name] = f"{type(error).__name__}: {str(error)[:300]}"
                continue
            if round_ >= warm_ups:
                times[name].append(1e3 * (time.perf_counter() - start))
    for name, ts in times.items():
        if name not in results:
            results[name] = statistics.median(ts)
    return results


def measure_stages(rec: Recorder, rows, repeats: int, device) -> None:
    """Stage A, Stage B and (plain layer) torch.nn.LSTM on the same weights, train and infer."""
    from cellstate.kernels.triton.lstm_ops import stage_for
    from cellstate.kernels.triton.persistent_ops import rows_per_program

    for shape, dname, variant in rows:
        T, B, D, H = shape
        dtype, tf32 = PRECISIONS[dname]
        bench_gpu._set_tf32(tf32, device)
        kwargs = bench_gpu._variant_kwargs(VARIANTS.get(variant, {}), H)
        torch_lstm = None
        if variant == "plain":
            torch_lstm = nn.LSTM(D, H, device=device, dtype=dtype)
            ours = cellstate.LSTM.from_torch(torch_lstm, backend="triton")
        else:
            ours = cellstate.LSTM(D, H, backend="triton", device=device, dtype=dtype, **kwargs)
        models = {"triton A": (ours, {STAGE_VARIABLE: "A"})}
        with environment({STAGE_VARIABLE: "B"}):
            if stage_for((T, B, H, kwargs.get("proj_size") or H)) == "B":  # else: not measured
                models["triton B"] = (ours, {STAGE_VARIABLE: "B"})
                if rows_per_program(dtype, tf32) != 16:  # and tl.dot's 16 rows
                    models["triton B, 16 rows"] = (ours, {STAGE_VARIABLE: "B", ROWS: "16"})
        if torch_lstm is not None:
            models["torch.nn.LSTM"] = (torch_lstm, {})
        x = bench_gpu._input(shape, dtype, device, packed=False)
        kernels = bench_gpu._torch_kernels(torch_lstm, x, device) if torch_lstm else []
        for mode in ("train", "infer"):
            for impl, ms in _time(models, x, mode == "train", repeats, device).items():
                failed = isinstance(ms, str)
                rec.add(
                    shape=shape, dtype=dname, mode=mode, variant=variant, impl=impl,
                    ms=math.nan if failed else ms, error=ms if failed else None,
                    kernels=kernels if impl == "torch.nn.LSTM" else [],
                )  # fmt: skip


def winners(rows: list[dict]) -> list[str]:
    """Per shape, dtype, variant and mode: the fastest Triton entry, the others' times as
    multiples of it, and the winner against torch.nn.LSTM."""
    lines = []
    groups: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        key = (tuple(row["shape"]), row["dtype"], row["variant"], row["mode"])
        groups.setdefault(key, {})[row["impl"]] = row
    for (shape, dname, variant, mode), impls in groups.items():
        label = f"{'x'.join(map(str, shape))} {dname} {variant} {mode}"
        errors = [f"{i}: {r['error']}" for i, r in impls.items() if r.get("error")]
        ours = {i: r for i, r in impls.items() if i.startswith("triton")}
        if errors or "triton B" not in ours:
            lines.append(f"{label}: no comparison ({'; '.join(errors) or 'Stage B not run'})")
            continue
        win = min(ours.values(), key=lambda r: r["ms"])
        others = ", ".join(
            f"{i} {r['ms'] / win['ms']:.2f}x" for i, r in ours.items() if r is not win
        )
        line = f"{label}: {win['impl']} wins, {win['ms']:.2f} ms ({others})"
        theirs = impls.get("torch.nn.LSTM")
        if theirs is not None:
            line += (
                f"; torch.nn.LSTM {theirs['ms']:.2f} ms (winner {win['ms'] / theirs['ms']:.2f}x)"
            )
        lines.append(line)
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=False)
    parser.add_argument("--stages", action="store_true", help="Stage A vs B vs torch.nn.LSTM")
    known, rest = parser.parse_known_args(argv)
    if not known.stages:  # (--help: bench's options; --stages --help: these)
        return bench_gpu.main(rest)
    parser.add_argument("-h", "--help", action="help")
    parser.add_argument("--out", help="JSON file, rewritten after every measurement")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny, on CPU (interpreter)")
    args = parser.parse_args(argv)
    if args.smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are imported
        device, rows, repeats = torch.device("cpu"), SMOKE_ROWS, 1
    elif not torch.cuda.is_available():
        print("gpu.py --stages: no CUDA device (--smoke runs it on CPU)", file=sys.stderr)
        return 2
    else:
        device, rows, repeats = torch.device("cuda"), STAGE_ROWS, args.repeats
    rec = Recorder(args.out, bench_gpu.machine(device))
    torch.manual_seed(0)
    measure_stages(rec, rows, repeats, device)
    lines = winners(rec.data["rows"])
    if args.smoke:
        lines.insert(0, "smoke run: interpreter timings on CPU, meaningless")
    rec.data["winners"] = lines
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rec.data, f, indent=1)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
