"""Two builds of the CPU kernel side by side in one process: cellstate.LSTM training (forward +
backward) and inference timed with each, alternating, so that the machine's load hits both alike.

    python benchmarks/kernel_ab.py ~/.cache/cellstate/<old build>/cellstate_cpu_<hash>.so

"A" is the given .so (e.g. main's build), "B" the build of the sources in this tree. Prints the
median of each and B / A per shape.
"""

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

import cellstate
from cellstate.kernels.cpu import build

SHAPES = ((1000, 1, 2, 8), (1000, 32, 2, 32), (1000, 32, 2, 128), (200, 64, 64, 256))


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def call(lstm: torch.nn.Module, x: torch.Tensor, train: bool) -> None:
    """One timed call: forward + backward of the output's sum, or inference."""
    if train:
        out, _ = lstm(x)
        out.sum().backward()
    else:
        with torch.no_grad():
            lstm(x)


def _time(shape: tuple[int, int, int, int], train: bool) -> float:
    T, B, D, H = shape
    lstm = cellstate.LSTM(D, H, backend="cpu")
    x = torch.randn(T, B, D, requires_grad=train)
    start = time.perf_counter()
    call(lstm, x, train)
    return (time.perf_counter() - start) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="the other build's .so (A)")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    builds = {"A": _load(args.old), "B": build.load()}
    print("shape        mode   A ms    B ms   B/A")
    for shape in SHAPES:
        for train in (True, False):
            times = {name: [] for name in builds}
            for _ in range(args.repeats + 1):  # the first round warms up
                for name, module in builds.items():
                    build._module = module
                    times[name].append(_time(shape, train))
            a, b = (statistics.median(times[n][1:]) for n in builds)
            label = "x".join(map(str, shape))
            print(f"{label:<12} {'train' if train else 'infer'} {a:7.2f} {b:7.2f} {b / a:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
