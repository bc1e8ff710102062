"""What chrono initialisation gives the input gate on the adding problem, as T grows (RESULTS.md,
"Adding T = 10,000"). Measured on the default `cellstate train` model at initialisation:

* the gradient reaching the input gate's marker weight W_ii[:, marker] (the weight that must grow
  for the gate to open at the marked pairs), RMS over batches, median over the units whose chrono
  time scale u = 1 + e^{b_f} exceeds T/2 (those that can hold X2), next to Adam's eps (1e-8);
* the cell state's scale at the last step, |c_T|, with chrono's b_i = -b_f and with the input-gate
  bias decoupled from it (b_i = -b_f / 2, gates ~u^{-1/2} instead of ~1/u).

    PYTHONPATH=src python benchmarks/input_gate_probe.py --lengths 100,1000,10000
"""

from __future__ import annotations

import argparse

import torch

from cellstate.tasks import make_task
from cellstate.training.config import ModelConfig, resolve_t_max
from cellstate.training.model import SequenceModel

ADAM_EPS = 1e-8  # torch.optim.Adam's default, which the trainer uses


def default_model(length: int, seed: int, input_bias: str) -> tuple[SequenceModel, torch.Tensor]:
    """The default model at init and its units' chrono time scales u (H,); input_bias "chrono"
    keeps b_i = -b_f, "half" sets b_i = -b_f / 2."""
    task = make_task("adding", length)
    torch.manual_seed(seed)
    model = SequenceModel(ModelConfig(t_max=resolve_t_max(task)), task)
    lstm, H = model.recurrent, model.recurrent.hidden_size
    with torch.no_grad():
        b_f = lstm.bias_ih_l0[H : 2 * H].clone()
        if input_bias == "half":
            lstm.bias_ih_l0[:H] = -b_f / 2
    return model, 1 + b_f.exp()


def marker_weight_gradient(length: int, seed: int, batches: int) -> float:
    """Median over the units with u > T/2 of the RMS of dL/dW_ii[:, 1] over `batches` batches of
    32 sequences."""
    task = make_task("adding", length)
    model, u = default_model(length, seed, "chrono")
    H = model.recurrent.hidden_size
    generator = torch.Generator().manual_seed(seed)
    grads = []
    for _ in range(batches):
        batch = task.batch(32, generator)
        model.zero_grad()
        task.loss(model(batch.inputs), batch).backward()
        grads.append(model.recurrent.weight_ih_l0.grad[:H, 1].clone())
    rms = torch.stack(grads).pow(2).mean(0).sqrt()
    return float(rms[u > length / 2].median())


@torch.no_grad()
def cell_scale(length: int, seed: int, input_bias: str) -> tuple[float, float]:
    """Median |c_T| over a batch of 32 and units, and the fraction with tanh'(c_T) < 0.1."""
    task = make_task("adding", length)
    model, _ = default_model(length, seed, input_bias)
    batch = task.batch(32, torch.Generator().manual_seed(seed))
    c = model.recurrent(batch.inputs)[1][1][0]  # (B, H), the cell state after the last step
    saturated = (1 - torch.tanh(c) ** 2 < 0.1).float().mean()
    return float(c.abs().median()), float(saturated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="100,1000,10000", help="comma-separated T")
    parser.add_argument("--batches", type=int, default=8, help="batches of 32 per gradient RMS")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(
        "| T | dL/dW_ii[:, marker] (units u > T/2) | / Adam eps "
        "| median abs(c_T), b_i = -b_f | b_i = -b_f / 2 (saturated) |"
    )
    print("| ---: | ---: | ---: | ---: | ---: |")
    for length in (int(x) for x in args.lengths.split(",")):
        grad = marker_weight_gradient(length, args.seed, args.batches)
        chrono, _ = cell_scale(length, args.seed, "chrono")
        half, saturated = cell_scale(length, args.seed, "half")
        print(
            f"| {length} | {grad:.1e} | {grad / ADAM_EPS:.1f} | {chrono:.3f} "
            f"| {half:.2f} ({saturated:.0%}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
