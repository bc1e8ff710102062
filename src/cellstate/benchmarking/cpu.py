"""The CPU kernel against torch.nn.LSTM, the reference and a Python loop (``cellstate bench``,
``benchmarks/speed.py``).

Side by side in one process, interleaved round by round so that drifting machine load hits every
implementation alike; medians after a warm-up. Training is forward + backward of
``output.sum()``; inference is a no_grad forward. FLOPs: training ~ 3 x 2*T*B*4H*(D+H),
inference a third; "% sgemm" compares with a large float32 GEMM timed in the same run. The
memory check trains in a subprocess and compares its peak RSS with the activations that
backward needs.
"""

from __future__ import annotations

import json
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

import cellstate
from cellstate.kernels.cpu import build

SHAPES = [
    (1000, 1, 2, 8),
    (1000, 32, 2, 32),
    (1000, 32, 2, 128),
    (200, 64, 64, 256),
    (100, 128, 128, 512),
    (100, 32, 256, 1024),
]
VARIANT_SHAPE = (1000, 32, 2, 128)
VARIANTS = {
    "peephole": {"peephole": True},
    "layer_norm": {"layer_norm": True},
    "zoneout": {"zoneout": 0.1},
    "return_states": {"return_states": True},
}
MEMORY_SHAPE = (10000, 32, 2, 128)
SLOW = ("reference", "python loop")


def add_arguments(parser) -> None:
    """The CPU benchmark's options (``--out`` and ``--repeats`` serve the GPU one too)."""
    parser.add_argument("--shapes", nargs="*", metavar="T,B,D,H", help="default: the six")
    parser.add_argument("--variants", nargs="*", choices=list(VARIANTS), help="default: all")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per implementation")
    parser.add_argument("--slow-repeats", type=int, default=1, help="for reference, Python loop")
    parser.add_argument("--skip-slow", action="store_true", help="no reference, no Python loop")
    parser.add_argument("--no-memory", action="store_true", help="skip the T=10000 memory check")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="of the input and of every model's weights",
    )
    parser.add_argument("--out", help="write the results as JSON here")


class PythonLoopLSTM(nn.Module):
    """The usual custom-cell approach: torch.nn.LSTMCell stepped in a Python loop."""

    def __init__(self, lstm: nn.LSTM):
        super().__init__()
        self.cell = nn.LSTMCell(lstm.input_size, lstm.hidden_size)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(self.cell, name).copy_(getattr(lstm, f"{name}_l0"))

    def forward(self, x):
        h = c = x.new_zeros(x.shape[1], self.cell.hidden_size)
        outputs = []
        for x_t in x:
            h, c = self.cell(x_t, (h, c))
            outputs.append(h)
        return torch.stack(outputs), (h, c)


def _flops(shape, training: bool) -> float:
    T, B, D, H = shape
    forward = 2 * T * B * 4 * H * (D + H)
    return 3 * forward if training else forward


def _sgemm_gflops(repeats: int = 5) -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * 2048**3 / statistics.median(times) / 1e9


def _step(model, x, training: bool):
    if training:
        output = model(x)[0]
        output.float().sum().backward()  # the sum in float32 whatever the dtype
    else:
        with torch.no_grad():
            model(x)


def _time_side_by_side(models: dict, x, training: bool, repeats: int, slow_repeats: int):
    """Median seconds per implementation, rounds interleaved; slow ones get fewer runs."""
    for model in models.values():
        _step(model, x, training)  # warm-up (and the kernel's first-use build)
    times: dict[str, list[float]] = {name: [] for name in models}
    for round_ in range(repeats):
        for name, model in models.items():
            if name in SLOW and round_ >= slow_repeats:
                continue
            start = time.perf_counter()
            _step(model, x, training)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _models(shape, skip_slow: bool, dtype=torch.float32, **variant) -> dict:
    """Same weights everywhere, in dtype; with a variant, cellstate and its reference only."""
    T, B, D, H = shape
    if variant:
        models = {"cellstate": cellstate.LSTM(D, H, **variant)}
        if not skip_slow:
            models["reference"] = cellstate.LSTM(D, H, backend="reference", **variant)
            models["reference"].load_state_dict(models["cellstate"].state_dict())
    else:
        torch_lstm = nn.LSTM(D, H)
        models = {"torch.nn.LSTM": torch_lstm, "cellstate": cellstate.LSTM.from_torch(torch_lstm)}
        if not skip_slow:
            models["reference"] = cellstate.LSTM.from_torch(torch_lstm, backend="reference")
            models["python loop"] = PythonLoopLSTM(torch_lstm)
    return {name: model.to(dtype) for name, model in models.items()}


def measure(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes] if args.shapes else SHAPES
    variants = VARIANTS if args.variants is None else {v: VARIANTS[v] for v in args.variants}
    dtype = getattr(torch, args.dtype)
    results = {"machine": machine(), "sgemm_gflops": _sgemm_gflops(), "rows": []}
    results["dtype"] = args.dtype
    for shape in shapes:
        x = torch.randn(shape[0], shape[1], shape[2], dtype=dtype)
        for training in (True, False):
            models = _models(shape, args.skip_slow, dtype)
            times = _time_side_by_side(models, x, training, args.repeats, args.slow_repeats)
            _add_rows(results, shape, "train" if training else "infer", times, "torch.nn.LSTM")
            print(_format_rows(results["rows"][-len(times) :]), flush=True)
    if variants:
        x = torch.randn(*VARIANT_SHAPE[:3], dtype=dtype)
        plain_model = {"cellstate": _models(VARIANT_SHAPE, True, dtype)["cellstate"]}
        plain = _time_side_by_side(plain_model, x, True, args.repeats, 0)["cellstate"]
        for name, variant in variants.items():
            vm = _models(VARIANT_SHAPE, args.skip_slow, dtype, **variant)
            times = _time_side_by_side(vm, x, True, args.repeats, args.slow_repeats)
            times = {f"{k} {name}": v for k, v in times.items()}
            _add_rows(results, VARIANT_SHAPE, "train", times, None, plain=plain)
            print(_format_rows(results["rows"][-len(times) :]), flush=True)
    if not args.no_memory:
        results["memory"] = memory_check()
        print(_format_memory(results["memory"]), flush=True)
    return results


def _add_rows(results, shape, mode, times, baseline, plain=None):
    sgemm = results["sgemm_gflops"]
    for name, seconds in times.items():
        gflops = _flops(shape, mode == "train") / seconds / 1e9
        row = {
            "shape": list(shape),
            "mode": mode,
            "impl": name,
            "ms": seconds * 1e3,
            "gflops": gflops,
            "pct_sgemm": 100 * gflops / sgemm,
        }
        if baseline is not None:
            row["vs_torch"] = seconds / times[baseline]
        if plain is not None:
            row["vs_plain_cellstate"] = seconds / plain
        results["rows"].append(row)


def _format_rows(rows) -> str:
    lines = []
    for r in rows:
        ratio = r.get("vs_torch", r.get("vs_plain_cellstate"))
        what = "x torch" if "vs_torch" in r else "x plain"
        shape = "x".join(map(str, r["shape"]))
        lines.append(
            f"{shape:>16} {r['mode']:5} {r['impl']:26} {r['ms']:10.1f} ms  "
            f"{ratio:6.2f} {what}  {r['gflops']:6.1f} GFLOP/s  {r['pct_sgemm']:5.1f}% sgemm"
        )
    return "\n".join(lines)


def machine() -> dict:
    model = platform.processor()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line
        )
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    return {
        "cpu": model,
        "threads": torch.get_num_threads(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "cellstate": cellstate.__version__,
        "python": platform.python_version(),
        "cpu_kernel": _kernel_status(),
    }


def _kernel_status() -> str:
    """The kernel's state once loaded, so that it includes the threads its loops run on."""
    try:
        build.load()
    except RuntimeError:
        pass  # the status says why
    return build.status()


# ---- memory -------------------------------------------------------------------------------


def memory_check(shape=MEMORY_SHAPE) -> dict:
    """Peak RSS growth of one training step, in a fresh subprocess per implementation, against
    what backward needs: gates (4H), c (H) and h (H) per step and sequence, float32."""
    T, B, D, H = shape
    needed = T * B * 6 * H * 4
    result = {"shape": list(shape), "needed_mb": needed / 2**20}
    for impl in ("cellstate", "torch.nn.LSTM"):
        code = (
            "from cellstate.benchmarking.cpu import _memory_child; "
            f"_memory_child({impl!r}, {shape!r})"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        grown = json.loads(out.strip().splitlines()[-1])["grown_bytes"]
        result[impl] = {"peak_growth_mb": grown / 2**20, "vs_needed": grown / needed}
    return result


def _memory_child(impl: str, shape) -> None:
    T, B, D, H = shape
    torch_lstm = nn.LSTM(D, H)
    model = cellstate.LSTM.from_torch(torch_lstm) if impl == "cellstate" else torch_lstm
    _step(model, torch.randn(5, B, D), True)  # loads the kernel; allocator warmed
    x = torch.randn(T, B, D)
    before = _current_rss()
    _step(model, x, True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the process's peak
    print(json.dumps({"grown_bytes": peak - before}))


def _current_rss() -> int:
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kb * 1024


def _format_memory(m) -> str:
    lines = [f"memory, training {'x'.join(map(str, m['shape']))}: backward needs "]
    lines[0] += f"{m['needed_mb']:.0f} MB of activations"
    for impl in ("cellstate", "torch.nn.LSTM"):
        r = m[impl]
        lines.append(
            f"  {impl:14} peak RSS growth {r['peak_growth_mb']:7.0f} MB = "
            f"{r['vs_needed']:.2f} x needed"
        )
    return "\n".join(lines)


def run(args) -> int:
    results = measure(args)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0
