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
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import cellstate
from cellstate.tasks import make_task
from cellstate.training.config import resolve_t_max


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=100, help="p")
    parser.add_argument(
        "--loss",
        choices=("mse", "ce"),
        default="ce",
        help="sigmoid + MSE, or softmax + cross-entropy",
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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    task = make_task("long-lag", args.length)
    lstm = cellstate.LSTM(task.input_size, args.hidden, init="chrono", t_max=resolve_t_max(task))
    head = torch.nn.Linear(args.hidden, task.output_size)
    params = [*lstm.parameters(), *head.parameters()]
    optimizer = (torch.optim.Adam if args.optimizer == "adam" else torch.optim.SGD)(
        params, lr=args.lr
    )
    generator = torch.Generator().manual_seed(args.seed)
    seen, streak, next_line, start = 0, 0, args.every, time.time()
    while seen < args.sequences:
        batch = task.batch(args.batch_size, generator)
        hidden = lstm(batch.inputs)[0]  # (p, B, H)
        logits = head(hidden)  # (p, B, p + 1)
        scored = slice(None) if args.scored == "all" else slice(-1, None)
        if args.loss == "mse":
            outputs = torch.sigmoid(logits)
            loss = F.mse_loss(outputs[scored], batch.targets[scored])
        else:
            outputs = torch.softmax(logits, dim=2)
            loss = F.cross_entropy(
                logits[scored].flatten(0, 1), batch.targets[scored].argmax(2).flatten()
            )
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
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
            print(
                f"{seen:>7} seq  loss {loss.item():.5f}  middle right {middle:.2f}  last right "
                f"{last:.2f}  |dh_T| {'-' if dh is None else f'{dh:.2e}'}  "
                f"{time.time() - start:.0f} s",
                flush=True,
            )
    print(f"not solved in {seen:,} sequences")


if __name__ == "__main__":
    main()
