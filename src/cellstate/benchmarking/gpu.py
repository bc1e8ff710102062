"""The Triton backend against torch.nn.LSTM on a CUDA GPU (issue 11's benchmark and targets);
``cellstate bench --device cuda`` and ``benchmarks/gpu.py`` run it.

    cellstate bench --device cuda --out gpu.json      # on a machine with a CUDA GPU
    python benchmarks/gpu.py --smoke                  # tiny, on CPU through Triton's interpreter

Side by side in one process, rounds interleaved, medians of ``--repeats`` timed runs after two
warm-ups, each run bracketed by ``torch.cuda.synchronize()``. "train" is forward + backward of
the output against a fixed cotangent, "infer" a no_grad forward. float32 is measured with TF32
off and on (``torch.backends.cuda.matmul.allow_tf32`` and ``torch.backends.cudnn.allow_tf32``:
both torch.nn.LSTM's cuDNN and our recurrent GEMMs use it), then float16 and bfloat16. For each
torch.nn.LSTM configuration the CUDA kernels it ran are recorded (torch.profiler), so the table
says whether torch used cuDNN. Every variant is timed at the two variant shapes against the
plain Triton layer, and the reference loop once at 1000x32x2x128. The JSON is rewritten after
every measurement, so an interrupted run keeps what it measured. At the end each target is
printed as met or missed, with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import cellstate

SHAPES = [(1000, 32, 2, 128), (100, 64, 256, 512), (1024, 16, 768, 768), (200, 256, 256, 1024)]
VARIANT_SHAPES = [(1000, 32, 2, 128), (100, 64, 256, 512)]
REFERENCE_SHAPE = (1000, 32, 2, 128)
SMOKE_SHAPE = (3, 2, 2, 4)
VARIANTS = {
    "peephole": {"peephole": True},
    "layer_norm": {"layer_norm": True},
    "no_forget_gate": {"forget_gate": False},
    "proj": {"proj_size": "H/2"},
    "zoneout": {"zoneout": 0.1},
    "recurrent_dropout": {"recurrent_dropout": 0.1},
    "return_states": {"return_states": True},
}
# The precisions measured, by --dtypes name: (dtype, TF32 allowed).
PRECISIONS = {
    "fp32": (torch.float32, False),
    "fp32-tf32": (torch.float32, True),
    "fp16": (torch.float16, False),
    "bf16": (torch.bfloat16, False),
}
VARIANT_PRECISIONS = ("fp32", "bf16")
TARGET_PLAIN = 1.5  # x torch.nn.LSTM, training
TARGET_NO_CUDNN = 1.0  # x torch.nn.LSTM where torch does not use cuDNN
TARGET_VARIANT = 1.3  # x the plain Triton layer
TARGET_REFERENCE = 20.0  # times faster than the reference loop


def _variant_kwargs(variant: dict, H: int) -> dict:
    return {k: (H // 2 if v == "H/2" else v) for k, v in variant.items()}


def _data(out) -> torch.Tensor:
    return out.data if isinstance(out, PackedSequence) else out


def _step(model, x, cotangent, training: bool) -> None:
    if training:
        _data(model(x)[0]).backward(cotangent)
    else:
        with torch.no_grad():
            model(x)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(models: dict, x, training: bool, repeats: int, device) -> dict[str, float]:
    """Median milliseconds per model after two warm-ups (one on CPU), rounds interleaved."""
    cotangents = {name: torch.randn_like(_data(m(x)[0])) for name, m in models.items()}
    for name, model in models.items():
        for _ in range(2 if device.type == "cuda" else 1):
            _step(model, x, cotangents[name], training)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            _sync(device)
            start = time.perf_counter()
            _step(model, x, cotangents[name], training)
            _sync(device)
            times[name].append(1e3 * (time.perf_counter() - start))
    return {name: statistics.median(ts) for name, ts in times.items()}


def _torch_kernels(model, x, device) -> list[str]:
    """The CUDA kernels one training step of model ran, most time first (empty off CUDA)."""
    if device.type != "cuda":
        return []
    from torch.profiler import ProfilerActivity, profile

    out = _data(model(x)[0])
    cotangent = torch.ones_like(out)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        _step(model, x, cotangent, True)
        _sync(device)

    def device_time(e) -> float:
        return getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0))

    events = [e for e in prof.key_averages() if device_time(e) > 0]
    events = [e for e in events if not e.key.startswith("aten::")]
    return [e.key for e in sorted(events, key=device_time, reverse=True)][:8]


def _uses_cudnn(kernels: list[str]) -> bool:
    return any("cudnn" in k.lower() or "rnn" in k.lower() for k in kernels)


def _input(shape, dtype, device, packed: bool):
    T, B, D, _ = shape
    x = torch.randn(T, B, D, dtype=dtype, device=device)
    if not packed:
        return x
    lengths = torch.randint(T // 2, T + 1, (B,), generator=torch.Generator().manual_seed(0))
    lengths[0] = T
    return pack_padded_sequence(x, lengths, enforce_sorted=False)


class Recorder:
    """Rows of results, written to JSON after each, printed as they come."""

    def __init__(self, path: str | None, machine: dict):
        self.path = path
        self.data = {"machine": machine, "rows": []}

    def add(self, **row) -> None:
        self.data["rows"].append(row)
        extra = f"  torch ran: {', '.join(row['kernels'][:3])}" if row.get("kernels") else ""
        print(
            f"{'x'.join(map(str, row['shape'])):>18} {row['dtype']:>9} {row['mode']:>5} "
            f"{row['variant']:>17} {row['impl']:>13} {row['ms']:10.2f} ms{extra}",
            flush=True,
        )
        if self.path:
            with open(self.path, "w") as f:
                json.dump(self.data, f, indent=1)

    def ms(self, **key) -> float | None:
        for row in self.data["rows"]:
            if all(row.get(k) == v for k, v in key.items()):
                return row["ms"]
        return None


def machine(device: torch.device) -> dict:
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (interpreter)",
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    return info


def _set_tf32(allowed: bool, device: torch.device) -> None:
    if device.type == "cuda":  # (and off CUDA, cuDNN's flags may be frozen by torch's tests)
        torch.backends.cuda.matmul.allow_tf32 = allowed
        torch.backends.cudnn.allow_tf32 = allowed


def _settings(shapes, dtypes, device):
    """(shape, precision name, dtype) for every shape and precision, with TF32 switched on or off
    as the precision says before each is yielded."""
    for shape in shapes:
        for dname in dtypes:
            dtype, tf32 = PRECISIONS[dname]
            _set_tf32(tf32, device)
            yield shape, dname, dtype


def measure_plain(rec: Recorder, shapes, dtypes, repeats: int, device) -> None:
    """torch.nn.LSTM against the Triton layer (same weights), padded and packed input."""
    for shape, dname, dtype in _settings(shapes, dtypes, device):
        T, B, D, H = shape
        torch_lstm = nn.LSTM(D, H, device=device, dtype=dtype)
        ours = cellstate.LSTM.from_torch(torch_lstm, backend="triton")
        models = {"torch.nn.LSTM": torch_lstm, "triton": ours}
        for variant, packed in (("plain", False), ("packed", True)):
            x = _input(shape, dtype, device, packed)
            kernels = _torch_kernels(torch_lstm, x, device)
            for mode in ("train", "infer"):
                for impl, ms in _time(models, x, mode == "train", repeats, device).items():
                    rec.add(
                        shape=shape, dtype=dname, mode=mode, variant=variant, impl=impl,
                        ms=ms, kernels=kernels if impl == "torch.nn.LSTM" else [],
                    )  # fmt: skip


def measure_variants(rec: Recorder, shapes, dtypes, repeats: int, device) -> None:
    """Each variant against the plain Triton layer, training and inference."""
    for shape, dname, dtype in _settings(shapes, dtypes, device):
        T, B, D, H = shape
        x = _input(shape, dtype, device, packed=False)
        models = {
            name: cellstate.LSTM(
                D, H, backend="triton", device=device, dtype=dtype, **_variant_kwargs(kwargs, H)
            ).train()
            for name, kwargs in VARIANTS.items()
        }
        for mode in ("train", "infer"):
            for name, ms in _time(models, x, mode == "train", repeats, device).items():
                rec.add(shape=shape, dtype=dname, mode=mode, variant=name, impl="triton", ms=ms)


def measure_reference(rec: Recorder, shape, device) -> None:
    """The reference loop against the Triton layer, float32 training (one timed run: slow)."""
    _set_tf32(False, device)
    T, B, D, H = shape
    ours = cellstate.LSTM(D, H, backend="triton", device=device)
    ref = cellstate.LSTM(D, H, backend="reference", device=device)
    ref.load_state_dict(ours.state_dict())
    x = _input(shape, torch.float32, device, packed=False)
    models = {"reference": ref, "triton": ours}
    for impl, ms in _time(models, x, True, 1, device).items():
        rec.add(shape=shape, dtype="fp32", mode="train", variant="vs reference", impl=impl, ms=ms)


def verdicts(rows: list[dict]) -> list[str]:
    """Each target that the rows measure: met or MISSED, with the figures."""

    def find(**key) -> dict | None:
        return next((r for r in rows if all(r.get(k) == v for k, v in key.items())), None)

    lines = []
    for row in rows:
        if row["impl"] != "triton" or row["mode"] != "train":
            continue
        where = dict(mode="train", shape=row["shape"], dtype=row["dtype"])
        label = f"{row['variant']} training {'x'.join(map(str, row['shape']))} {row['dtype']}"
        if row["variant"] in ("plain", "packed"):
            theirs = find(impl="torch.nn.LSTM", variant=row["variant"], **where)
            if theirs is None:
                continue
            cudnn = _uses_cudnn(theirs["kernels"])
            bar, r = TARGET_PLAIN if cudnn else TARGET_NO_CUDNN, row["ms"] / theirs["ms"]
            lines.append(
                f"{'met' if r <= bar else 'MISSED'}: {label}: triton {r:.2f}x torch.nn.LSTM "
                f"({'cuDNN' if cudnn else 'no cuDNN'}; target <= {bar}x)"
            )
        elif row["variant"] in VARIANTS:
            plain = find(impl="triton", variant="plain", **where)
            if plain is None:
                continue
            r = row["ms"] / plain["ms"]
            lines.append(
                f"{'met' if r <= TARGET_VARIANT else 'MISSED'}: {label}: {r:.2f}x plain triton "
                f"(target <= {TARGET_VARIANT}x)"
            )
        else:
            ref = find(impl="reference", variant=row["variant"], **where)
            if ref is None:
                continue
            r = ref["ms"] / row["ms"]
            lines.append(
                f"{'met' if r >= TARGET_REFERENCE else 'MISSED'}: {label}: triton {r:.1f}x "
                f"faster than the reference loop (target >= {TARGET_REFERENCE}x)"
            )
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The GPU benchmark's own options (``--out`` and ``--repeats`` are bench's)."""
    parser.add_argument(
        "--dtypes",
        nargs="*",
        choices=list(PRECISIONS),
        default=list(PRECISIONS),
        help="GPU: the precisions to measure (default: all)",
    )
    parser.add_argument("--no-variants", action="store_true", help="GPU: skip the variants")
    parser.add_argument("--no-reference", action="store_true", help="GPU: skip the reference")
    parser.add_argument("--smoke", action="store_true", help="GPU: tiny, on CPU (interpreter)")
    parser.add_argument(
        "--verdicts", metavar="JSON", help="GPU: print the targets of a (partial) run's JSON"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="JSON file, rewritten after every measurement")
    parser.add_argument("--repeats", type=int, default=5)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    if args.verdicts:
        with open(args.verdicts) as f:
            print("\n".join(verdicts(json.load(f)["rows"])))
        return 0
    if args.smoke:
        # before the kernels are first imported: they run on CPU tensors through the interpreter
        os.environ.setdefault("TRITON_INTERPRET", "1")
        device = torch.device("cpu")
        shapes = variant_shapes = [SMOKE_SHAPE]
        dtypes, variant_dtypes, repeats = ["fp32"], ["fp32"], 1
        reference_shape = SMOKE_SHAPE
    else:
        if not torch.cuda.is_available():
            print(
                "bench --device cuda: no CUDA device (--smoke checks the benchmark on CPU)",
                file=sys.stderr,
            )
            return 2
        device = torch.device("cuda")
        shapes, variant_shapes, reference_shape = SHAPES, VARIANT_SHAPES, REFERENCE_SHAPE
        dtypes, repeats = args.dtypes, args.repeats
        variant_dtypes = [d for d in VARIANT_PRECISIONS if d in dtypes]
    rec = Recorder(args.out, machine(device))
    print(json.dumps(rec.data["machine"]))
    torch.manual_seed(0)
    measure_plain(rec, shapes, dtypes, repeats, device)
    if not args.no_variants:
        measure_variants(rec, variant_shapes, variant_dtypes, repeats, device)
    if not args.no_reference:
        measure_reference(rec, reference_shape, device)
    lines = verdicts(rec.data["rows"])
    if args.smoke:
        lines.insert(0, "smoke run: interpreter timings on CPU, meaningless for the targets")
    rec.data["verdicts"] = lines
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rec.data, f, indent=1)
    print("\n".join(lines))
    return 0
