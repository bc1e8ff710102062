"""Two builds of the CPU kernel in one process, in bfloat16, against torch.nn.LSTM's bfloat16.

    taskset -c 0 python benchmarks/bf16_kernel_ab.py \
        ~/.cache/cellstate/<old build>/cellstate_cpu_<hash>.so --shape 100,32,128,128

"A" is the given .so (e.g. main's build), "B" the build of the sources in this tree; both run
under this tree's Python side, so they must share its calling convention (kernel_ab.py's
condition). Each iteration runs torch.nn.LSTM, then cellstate.LSTM on A and on B (the order of A
and B swapped every iteration): a training call (the forward with the output's float sum, then
the backward, each timed) and a forward under no_grad, each timed by the thread's CPU time, one
torch thread. Prints the medians, each as a ratio to torch's, and B / A, for the forward, the
backward, the whole training call and the no-grad forward.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from kernel_ab import _load

import cellstate
from cellstate.kernels.cpu import build

PARTS = ("forward", "backward", "train", "no grad")


def _timed(model, x) -> dict[str, float]:
    clock = time.thread_time
    start = clock()
    out, _ = model(x)
    loss = out.float().sum()
    forward = clock()
    loss.backward()
    backward = clock()
    with torch.no_grad():
        model(x)
    end = clock()
    return {
        "forward": forward - start,
        "backward": backward - forward,
        "train": backward - start,
        "no grad": end - backward,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="the other build's .so (A)")
    parser.add_argument("--shape", default="100,32,128,128", metavar="T,B,D,H")
    parser.add_argument("--repeats", type=int, default=60, help="timed iterations")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    builds = {"A": _load(args.old), "B": build.load()}
    load = build.load
    T, B, D, H = (int(v) for v in args.shape.split(","))
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(D, H).bfloat16()
    ours = cellstate.LSTM(D, H, backend="cpu").bfloat16()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(T, B, D).bfloat16().requires_grad_()
    times = {name: {part: [] for part in PARTS} for name in ("torch", "A", "B")}
    try:
        for k in range(args.repeats + 3):  # 3 warm-ups
            for name in ("torch", "A", "B") if k % 2 else ("torch", "B", "A"):
                if name != "torch":
                    build.load = lambda module=builds[name]: module
                result = _timed(theirs if name == "torch" else ours, x)
                for part in PARTS if k >= 3 else ():
                    times[name][part].append(result[part])
    finally:
        build.load = load
    print(f"{args.shape}: ms (ratio to torch's)")
    for part in PARTS:
        t, a, b = (statistics.median(times[n][part]) * 1e3 for n in ("torch", "A", "B"))
        print(
            f"{part:9} torch {t:7.3f}  A {a:7.3f} ({a / t:.3f})  B {b:7.3f} ({b / t:.3f})"
            f"  B / A {b / a:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
