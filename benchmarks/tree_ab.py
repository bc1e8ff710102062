"""Two source trees side by side: cellstate.LSTM (backend="cpu") training and inference timed in
alternating subprocesses, one per tree and round, so that the machine's load hits both alike.
For changes that kernel_ab.py cannot compare (it swaps only the compiled kernel, so the Python
side and the kernel's calling convention must be the same in both builds).

    git worktree add /tmp/old <commit>
    python benchmarks/tree_ab.py /tmp/old . --rounds 7

"A" is the first tree, "B" the second; each subprocess runs with PYTHONPATH=<tree>/src, builds
(or loads) that tree's kernel, warms up (5 calls), and reports the median of --repeats calls
(more for small shapes: at least 0.5 s of them) per shape and mode. Prints the median over rounds
of each and B / A per shape. --cpu-time times each call by the calling thread's CPU time
(time.thread_time) instead of the wall clock: less moved by other programs on a loaded machine;
with --threads 1 the kernel's work all runs on that thread.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

SHAPES = ((100, 1, 32, 32), (1000, 1, 2, 8), (1000, 32, 2, 128), (200, 64, 64, 256))

# Runs inside each subprocess: one median per shape and mode, as JSON on the last line.
_CHILD = r"""
import json, statistics, sys, time
import torch
import cellstate
sys.path.insert(0, sys.argv[3])
from kernel_ab import call
torch.manual_seed(0)
shapes, repeats = json.loads(sys.argv[1]), int(sys.argv[2])
clock = time.thread_time if sys.argv[4] == "cpu" else time.perf_counter
results = {}
for T, B, D, H in shapes:
    lstm = cellstate.LSTM(D, H, backend="cpu")
    for train in (True, False):
        x = torch.randn(T, B, D, requires_grad=train)
        times = []
        k = 0
        while k < repeats + 5 or sum(times) < 0.5:  # 5 warm-ups; small shapes: >= 0.5 s timed
            start = clock()
            call(lstm, x, train)
            if k >= 5:
                times.append(clock() - start)
            k += 1
        results[f"{T}x{B}x{D}x{H} {'train' if train else 'infer'}"] = statistics.median(times)
print(json.dumps(results))
"""


def _run(tree: Path, shapes, repeats: int, threads: int, cpu_time: bool) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"), OMP_NUM_THREADS=str(threads))
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            json.dumps(shapes),
            str(repeats),
            str(Path(__file__).parent),
            "cpu" if cpu_time else "wall",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="the first source tree (e.g. the previous commit)")
    parser.add_argument("b", type=Path, help="the second source tree (e.g. this one)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating subprocess pairs")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per subprocess")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of both")
    parser.add_argument("--cpu-time", action="store_true", help="thread CPU time, not wall")
    args = parser.parse_args(argv)
    runs = {"A": [], "B": []}
    for k in range(args.rounds):
        order = ("A", "B") if k % 2 == 0 else ("B", "A")  # who goes first alternates too
        for name in order:
            tree = args.a if name == "A" else args.b
            runs[name].append(_run(tree, SHAPES, args.repeats, args.threads, args.cpu_time))
        print(f"round {k + 1}/{args.rounds} done", file=sys.stderr)
    print(f"{'T x B x D x H, mode':28} {'A ms':>9} {'B ms':>9} {'B / A':>7}")
    for key in runs["A"][0]:
        a = statistics.median(r[key] for r in runs["A"]) * 1e3
        b = statistics.median(r[key] for r in runs["B"]) * 1e3
        print(f"{key:28} {a:9.3f} {b:9.3f} {b / a:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
