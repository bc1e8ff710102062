"""Watch the adding problem's plateau from inside (RESULTS.md, "Adding T = 10,000").

Runs the steps of ``cellstate train --task adding --length T --seed S`` (the trainer's own model,
batches and updates; no evaluations) and prints, every K steps, the state of the units that can
hold X2 (chrono time scale u = 1 + e^{b_f} > T/2): the largest input-gate marker weight w_m
(the gate writes e^{w_m} times more at a marked pair), that unit's u and head weight, the median
|head weight| over all units and the median drift of the input-gate bias from chrono's -b_f.
Model fields can be set as NAME=VALUE (e.g. input_gate_bound=0.1767767, torch's 1/sqrt(32)):

    PYTHONPATH=src python benchmarks/plateau_probe.py 10000 1 --steps 700 --every 25
"""

from __future__ import annotations

import argparse
import time

import torch
from tqdm import tqdm

from cellstate.training.config import ModelConfig, RunConfig, TaskConfig, TrainingConfig
from cellstate.training.trainer import Trainer


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("length", type=int)
    parser.add_argument("seed", type=int)
    parser.add_argument("model", nargs="*", help="ModelConfig fields as NAME=VALUE (floats)")
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--every", type=int, default=25)
    return parser.parse_args()


def report(trainer: Trainer, length: int, step: int, loss: float) -> str:
    H = trainer.config.model.hidden
    state = trainer.model.state_dict()
    weight = state["recurrent.weight_ih_l0"]
    bias = state["recurrent.bias_ih_l0"] + state["recurrent.bias_hh_l0"]
    head = state["head.weight"][0]
    u = 1 + bias[H : 2 * H].exp()
    marker = torch.where(u > length / 2, weight[:H, 1], torch.tensor(-float("inf")))
    best = int(marker.argmax())
    return (
        f"step {step:5d} seq {trainer.monitor.sequences:6d} train loss {loss:.5f}  "
        f"long units {int((u > length / 2).sum()):2d}, max w_m {float(marker[best]):+.2f} "
        f"(u {float(u[best]):6.0f}, head {float(head[best]):+.2f})  "
        f"median |head| {float(head.abs().median()):.3f}  "
        f"median b_i + b_f {float((bias[:H] + bias[H : 2 * H]).median()):+.2f}"
    )


def main() -> None:
    args = parse_args()
    fields = {name: float(value) for name, value in (kv.split("=") for kv in args.model)}
    config = RunConfig(
        TaskConfig("adding", args.length), ModelConfig(**fields), TrainingConfig(seed=args.seed)
    )
    trainer = Trainer(config, None, progress=False)
    bar, start, losses = tqdm(disable=True), time.perf_counter(), []
    for step in range(1, args.steps + 1):
        window = trainer.counters.window
        before = (window.loss, window.sequences)
        trainer._step(bar)
        losses.append((window.loss - before[0]) / (window.sequences - before[1]))
        if step % args.every == 0:
            loss = sum(losses[-args.every :]) / args.every
            print(
                f"{report(trainer, args.length, step, loss)}  {time.perf_counter() - start:.0f} s"
            )


if __name__ == "__main__":
    main()
