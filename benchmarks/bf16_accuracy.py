"""bfloat16 accuracy of cellstate.LSTM and torch.nn.LSTM against float64, same weights.

Both bfloat16 models start from the same weights, rounded to bfloat16, which a float64
torch.nn.LSTM holds exactly; each model's output, input gradient and weight gradients (of
sum(output * R), R fixed random) are compared with the float64 model's: relative error
||a - ref|| / ||ref||, the median over seeds (the worst weight gradient per seed). Cases: two
layers on packed sequences of random lengths, uni- and bidirectional, and one padded layer.

    PYTHONPATH=src python benchmarks/bf16_accuracy.py --seeds 5
"""

import argparse
import statistics
import sys

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import cellstate

CASES = {  # name: (T, B, D, H, num_layers, bidirectional, packed)
    "2 layers, packed": (50, 8, 32, 64, 2, False, True),
    "2 layers, bidirectional, packed": (50, 8, 32, 64, 2, True, True),
    "1 layer, 100x32x128x128": (100, 32, 128, 128, 1, False, False),
}


def _run(model, x, lengths, weights):
    """output, d x and each weight's gradient, in float64."""
    x = x.detach().to(next(model.parameters()).dtype).requires_grad_()
    model.zero_grad()
    inp = pack_padded_sequence(x, lengths, enforce_sorted=False) if lengths is not None else x
    out = model(inp)[0]
    if lengths is not None:
        out = pad_packed_sequence(out)[0]
    (out.double() * weights).sum().backward()
    grads = {n: p.grad.double() for n, p in model.named_parameters()}
    return out.double().detach(), x.grad.double(), grads


def _error(a, ref):
    return ((a - ref).norm() / ref.norm()).item()


def errors(case, seed):
    T, B, D, H, layers, bidirectional, packed = case
    torch.manual_seed(seed)
    exact = torch.nn.LSTM(D, H, layers, bidirectional=bidirectional).double()
    with torch.no_grad():  # weights a bfloat16 model holds exactly
        for p in exact.parameters():
            p.copy_(p.bfloat16().double())
    theirs = torch.nn.LSTM(D, H, layers, bidirectional=bidirectional).bfloat16()
    theirs.load_state_dict(exact.state_dict())
    ours = cellstate.LSTM.from_torch(theirs)
    x = torch.randn(T, B, D).bfloat16().double()
    lengths = torch.randint(1, T + 1, (B,)) if packed else None
    if packed:
        lengths[0] = T
    weights = torch.randn(T, B, H * (2 if bidirectional else 1), dtype=torch.float64)
    ref = _run(exact, x, lengths, weights)
    result = {}
    for name, model in (("torch", theirs), ("cellstate", ours)):
        out, dx, grads = _run(model, x, lengths, weights)
        worst = max(_error(grads[n], ref[2][n]) for n in grads)
        result[name] = (_error(out, ref[0]), _error(dx, ref[1]), worst)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    print("case                              model      output      dx  worst dW")
    for name, case in CASES.items():
        runs = [errors(case, seed) for seed in range(args.seeds)]
        for model in ("torch", "cellstate"):
            med = [statistics.median(r[model][k] for r in runs) for k in range(3)]
            print(f"{name:33} {model:9} {med[0]:7.2e} {med[1]:7.2e} {med[2]:9.2e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
