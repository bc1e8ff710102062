"""float32 and float64 results of the CPU kernel, for comparing two source trees bit for bit.

    PYTHONPATH=<tree A>/src python benchmarks/bits_ab.py a.pt
    PYTHONPATH=<tree B>/src python benchmarks/bits_ab.py b.pt --compare a.pt

Saves every output and gradient of cellstate.LSTM (backend="cpu") on 168 cases: seven variants
(plain, projection, layer norm + peephole, zoneout, recurrent dropout, two bidirectional layers,
no forget gate), training and evaluation, float32 and float64, three shapes (D, H, B, T; the
last on the per-step schedule with two threads), one and two threads. With --compare, says
which results differ from the other tree's (torch.equal) and exits 1 if any does.
"""

import argparse
import sys

import torch

import cellstate

VARIANTS = {
    "plain": {},
    "proj": {"proj_size": 7},
    "layer_norm_peephole": {"layer_norm": True, "peephole": True},
    "zoneout": {"zoneout": (0.3, 0.5)},
    "recurrent_dropout": {"recurrent_dropout": 0.4},
    "stacked": {"num_layers": 2, "bidirectional": True},
    "no_forget_gate": {"forget_gate": False},
}
SHAPES = ((3, 40, 5, 9), (24, 48, 8, 6), (20, 300, 4, 4))  # D, H, B, T


def results() -> dict[str, torch.Tensor]:
    out = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name, kwargs in VARIANTS.items():
            for dtype in (torch.float32, torch.float64):
                for D, H, B, T in SHAPES:
                    for train in (True, False):
                        key = f"{name}/{dtype}/{D}x{H}x{B}x{T}/train={train}/threads={threads}"
                        torch.manual_seed(0)
                        module = cellstate.LSTM(D, H, backend="cpu", **kwargs).to(dtype)
                        module.train(train)
                        x = torch.randn(T, B, D, dtype=dtype, requires_grad=True)
                        output, (h_n, c_n) = module(x)
                        out[f"{key}/output"] = output.detach()
                        out[f"{key}/h_n"] = h_n.detach()
                        out[f"{key}/c_n"] = c_n.detach()
                        (output.pow(2).sum() + h_n.sum() + c_n.sum()).backward()
                        out[f"{key}/grad x"] = x.grad
                        for pname, p in module.named_parameters():
                            out[f"{key}/grad {pname}"] = p.grad
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="where to save this tree's results")
    parser.add_argument("--compare", help="another tree's saved results")
    args = parser.parse_args(argv)
    ours = results()
    torch.save(ours, args.path)
    cases = len({key.rsplit("/", 1)[0] for key in ours})
    if not args.compare:
        print(f"{cases} cases, {len(ours)} tensors saved")
        return 0
    theirs = torch.load(args.compare)
    differ = [k for k in ours if k not in theirs or not torch.equal(ours[k], theirs[k])]
    differ += [k for k in theirs if k not in ours]
    for key in differ:
        print("differs:", key)
    print(f"{cases} cases, {len(ours)} tensors: {len(differ)} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
