"""cellstate.LSTM against torch.nn.LSTM in bfloat16 on the CPU, timed by thread CPU time.

Both models have the same weights; training is forward + backward of the output's sum. Calls
alternate (torch, cellstate, torch, ...) and each is timed by the calling thread's CPU time
(time.thread_time), which other programs on a loaded machine move less than the wall clock
(speed.py --dtype bfloat16 times the wall clock). Only meaningful on one thread, where all the
work runs on the calling thread: the script sets torch.set_num_threads(1). Prints the medians
and cellstate / torch per shape and mode; "f32 products" is cellstate with its bfloat16 products
switched off (kernels/cpu/ops.py BF16_PRODUCTS: float32 products on the same values, as before
they existed), timed in the same rounds.

    taskset -c 0 python benchmarks/bf16_vs_torch.py --shapes 100,32,128,128 --repeats 15
"""

import argparse
import statistics
import sys
import time

import torch

import cellstate
from cellstate.kernels.cpu import ops

SHAPES = ("100,1,2,128", "100,8,32,128", "100,32,128,128", "1000,32,2,128", "200,64,64,256")


def _call(model, x, train: bool, bf16_products: bool = True) -> None:
    ops.BF16_PRODUCTS = bf16_products
    if train:
        out, _ = model(x)
        out.float().sum().backward()
    else:
        with torch.no_grad():
            model(x)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="*", default=SHAPES, metavar="T,B,D,H")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per model")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("T x B x D x H   mode   torch ms  cellstate ms  ratio  f32 products ms  ratio")
    for shape in args.shapes:
        T, B, D, H = (int(v) for v in shape.split(","))
        torch.manual_seed(0)
        theirs = torch.nn.LSTM(D, H).bfloat16()
        ours = cellstate.LSTM(D, H, backend="cpu").bfloat16()
        ours.load_state_dict(theirs.state_dict())
        for train in (True, False):
            x = torch.randn(T, B, D).bfloat16().requires_grad_(train)
            runs = {"torch": (theirs, True), "cellstate": (ours, True), "f32": (ours, False)}
            times = {name: [] for name in runs}
            for k in range(args.repeats + 2):  # 2 warm-ups
                for name, (model, bf16_products) in runs.items():
                    start = time.thread_time()
                    _call(model, x, train, bf16_products)
                    if k >= 2:
                        times[name].append(time.thread_time() - start)
            a, b, c = (statistics.median(times[n]) * 1e3 for n in runs)
            mode = "train" if train else "infer"
            print(
                f"{shape.replace(',', 'x'):15} {mode}  {a:9.2f}  {b:12.2f}  {b / a:5.2f}"
                f"  {c:15.2f}  {c / a:5.2f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
