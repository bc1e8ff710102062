"""Why the 1997 long-lag task (experiment 2a) is not learned: train the default LSTM on it with a
chosen loss, optimiser and scored steps, and watch the last step's memory.

The task (`cellstate.tasks.LongLagTask`): predict the next symbol at every step; only the last
prediction needs memory (the x or y of step 0, p steps back). Every `--every` sequences this
prints the training loss, whether the middle steps and the last step are right (max absolute
output error below 0.25, the paper's rule), and |dh_T|: the largest difference, over hidden
units, between the mean last hidden state of the x and the y sequences of the batch, that is,
how much of the first symbol reaches the end (- for a batch of one class). Stops when 10,000
successive sequences are right at every step (the paper's criterion) or after `--sequences`::

    PYTHONPATH=src python benchmarks/long_lag_probe.py --loss ce --scored all    # memory wiped
    PYTHONPATH=src python benchmarks/long_lag_probe.py --loss ce --scored last   # learned
    PYTHONPATH=src python benchmarks/long_lag_probe.py --loss linear --direct --zero-head \
        --beta2 0.9 --batch-size 4 --input-gate-bound 2    # solved: long lag's lab defaults

The 1997 variants: --no-forget-gate (the cell without a forget gate), --truncated (its gradient:
errors reach the past only through the cell state), --input-bias / --output-bias (gate biases at
init), --direct (input-to-output connections).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import cellstate
from cellstate.init import input_gate_weights_
from cellstate.tasks import make_task
from cellstate.training.config import resolve_t_max


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=100, help="p")
    parser.add_argument(
        "--loss",
        choices=("mse", "linear", "ce"),
        default="ce",
        help="sigmoid + MSE, linear + MSE, or softmax + cross-entropy",
    )
    parser.add_argument(
        "--scored", choices=("all", "last"), default="all", help="steps in the loss"
    )
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--sequences", type=int, default=15_040)
    parser.add_argument("--every", type=int, default=800, help="sequences between lines")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eps", type=float, default=1e-8, help="Adam's eps")
    parser.add_argument("--beta2", type=float, default=0.999, help="Adam's beta2")
    parser.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip (0: none)")
    parser.add_argument(
        "--no-forget-gate", action="store_true", help="the 1997 cell (torch's init, not chrono)"
    )
    parser.add_argument(
        "--truncated",
        action="store_true",
        help="the 1997 truncated gradient: gates and cell input read h_{t-1} detached",
    )
    parser.add_argument(
        "--input-gate-bound", type=float, help="input gate's input weights ~ U(-bound, bound)"
    )
    parser.add_argument("--input-bias", type=float, help="input-gate bias at init")
    parser.add_argument("--output-bias", type=float, help="output-gate bias at init")
    parser.add_argument("--zero-head", action="store_true", help="the head's weights start at 0")
    parser.add_argument("--direct", action="store_true", help="an input-to-output connection")
    return parser.parse_args(argv)


def truncated_lstm(lstm: cellstate.LSTM, inputs: torch.Tensor) -> torch.Tensor:
    """The layer's equations with h_{t-1} detached where it enters the gates: inputs (T, B, D)
    -> every h_t (T, B, H). Errors reach the past only through the cell state."""
    forget = lstm.forget_gate
    xw = inputs @ lstm.weight_ih_l0.t() + lstm.bias_ih_l0 + lstm.bias_hh_l0  # (T, B, G)
    H = lstm.hidden_size
    h = inputs.new_zeros(inputs.shape[1], H)
    c = torch.zeros_like(h)
    out = []
    for t in range(inputs.shape[0]):
        a = xw[t] + h.detach() @ lstm.weight_hh_l0.t()
        gates = a.chunk(4 if forget else 3, 1)
        i, g, o = torch.sigmoid(gates[0]), torch.tanh(gates[-2]), torch.sigmoid(gates[-1])
        c = (torch.sigmoid(gates[1]) * c if forget else c) + i * g
        h = o * torch.tanh(c)
        out.append(h)
    return torch.stack(out)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    task = make_task("long-lag", args.length)
    if args.no_forget_gate:
        lstm = cellstate.LSTM(task.input_size, args.hidden, forget_gate=False)
    else:
        lstm = cellstate.LSTM(
            task.input_size, args.hidden, init="chrono", t_max=resolve_t_max(task)
        )
    H, gates = args.hidden, lstm.num_gates
    if args.input_gate_bound is not None:
        input_gate_weights_(lstm.weight_ih_l0, H, args.input_gate_bound)
    with torch.no_grad():
        for value, block in ((args.input_bias, 0), (args.output_bias, gates - 1)):
            if value is not None:
                lstm.bias_ih_l0[block * H : (block + 1) * H] = value
                lstm.bias_hh_l0[block * H : (block + 1) * H] = 0.0
    head = torch.nn.Linear(args.hidden, task.output_size)
    direct = torch.nn.Linear(task.input_size, task.output_size, bias=False)
    if args.zero_head:
        torch.nn.init.zeros_(head.weight)
    params = [*lstm.parameters(), *head.parameters()]
    if args.direct:
        params += list(direct.parameters())
    if args.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=args.lr, betas=(0.9, args.beta2), eps=args.eps)
    else:
        optimizer = torch.optim.SGD(params, lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    seen, streak, next_line, start = 0, 0, args.every, time.time()
    while seen < args.sequences:
        batch = task.batch(args.batch_size, generator)
        hidden = truncated_lstm(lstm, batch.inputs) if args.truncated else lstm(batch.inputs)[0]
        logits = head(hidden)  # (p, B, p + 1)
        if args.direct:
            logits = logits + direct(batch.inputs)
        scored = slice(None) if args.scored == "all" else slice(-1, None)
        if args.loss != "ce":
            outputs = torch.sigmoid(logits) if args.loss == "mse" else logits
            loss = F.mse_loss(outputs[scored], batch.targets[scored])
        else:
            outputs = torch.softmax(logits, dim=2)
            loss = F.cross_entropy(
                logits[scored].flatten(0, 1), batch.targets[scored].argmax(2).flatten()
            )
        optimizer.zero_grad()
        loss.backward()
        if args.clip:
            torch.nn.utils.clip_grad_norm_(params, args.clip)
        optimizer.step()
        seen += args.batch_size
        error = (outputs - batch.targets).abs().amax(dim=2).detach()  # (p, B)
        right = (error < 0.25).all(dim=0)
        wrong = torch.nonzero(~right)
        streak = (
            streak + args.batch_size if wrong.numel() == 0 else args.batch_size - 1 - int(wrong[-1])
        )
        if streak >= 10_000:
            print(f"solved: 10,000 successive sequences right after {seen:,}")
            return
        if seen >= next_line:
            next_line += args.every
            is_x = batch.inputs[0, :, task.length - 1] > 0
            both = 0 < int(is_x.sum()) < args.batch_size  # else no difference to take
            dh = (
                (hidden[-1][is_x].mean(0) - hidden[-1][~is_x].mean(0)).abs().max() if both else None
            )
            middle = (error[:-1] < 0.25).all(dim=0).float().mean()
            last = (error[-1] < 0.25).float().mean()
            worst = error.max()
            print(
                f"{seen:>7} seq  loss {loss.item():.5f}  middle right {middle:.2f}  last right "
                f"{last:.2f}  max error {worst:.3f}  streak {streak}  "
                f"|dh_T| {'-' if dh is None else f'{dh:.2e}'}  {time.time() - start:.0f} s",
                flush=True,
            )
    print(f"not solved in {seen:,} sequences")


if __name__ == "__main__":
    main()
