"""Noise-free sequences with a long time lag (1997 experiment 2a)."""

from __future__ import annotations

import torch
from torch import Tensor

from cellstate.tasks.base import Batch, Task, check_int, masked_mse, one_hot
from cellstate.tasks.criterion import StoppingCriterion


class LongLagTask(Task):
    """1997 experiment 2a: predict the next symbol; the last one repeats the first, p steps back.

    p + 1 symbols a_1 .. a_{p-1}, x, y (one-hot indices 0 .. p-2, p-1, p). Only two sequences
    exist, each drawn with probability 1/2: (y, a_1, ..., a_{p-1}, y) and (x, a_1, ..., a_{p-1}, x).
    The model reads the first p symbols and predicts the next one at every step, so only the last
    prediction needs memory: the x or y it saw at step 0.

    inputs (p, B, p + 1) one-hot; targets (p, B, p + 1) one-hot of the next symbol; lengths (B,)
    all p; mask (p, B) all True. Loss: MSE over every step and output (the paper's).
    Correct: the largest absolute output error over the sequence below 0.25.
    Criterion: 10,000 successive sequences correct; the paper gives up after 5,000,000.
    Note the one-hot width grows with p: a batch of 32 at p = 1000 is 2 x 128 MB.

    Example (p = 4, symbols a1 a2 a3 x y = indices 0 1 2 3 4), the x-sequence:
        inputs  x  a1 a2 a3 -> 3 0 1 2
        targets a1 a2 a3 x  -> 0 1 2 3
    """

    name = "long-lag"
    summary = "1997 exp. 2a: predict the next symbol; the last repeats the first, p steps back"
    default_length = 100
    tolerance = 0.25

    def __init__(self, length: int = 100) -> None:
        self.length = check_int(self.name, "length", length, 2)
        self.input_size = length + 1
        self.output_size = length + 1

    def batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        check_int(self.name, "batch_size", batch_size, 1)
        p, device = self.length, generator.device
        # x has index p - 1, y index p.
        first = p - 1 + torch.randint(0, 2, (batch_size,), generator=generator, device=device)
        middle = torch.arange(p - 1, device=device)[:, None].expand(p - 1, batch_size)
        inputs = torch.cat([first[None], middle])  # (p, B) symbol indices
        targets = torch.cat([middle, first[None]])  # (p, B)
        lengths = torch.full((batch_size,), p, dtype=torch.int64, device=device)
        mask = torch.ones(p, batch_size, dtype=torch.bool, device=device)
        return Batch(one_hot(inputs, p + 1), one_hot(targets, p + 1), lengths, mask)

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        """MSE over every (step, output) of the sequences."""
        self._check_outputs(outputs, batch)
        return masked_mse(outputs, batch.targets, batch.mask)

    def correct(self, outputs: Tensor, batch: Batch) -> Tensor:
        """(B,) bool: the largest absolute error over all steps and outputs below 0.25."""
        self._check_outputs(outputs, batch)
        error = (outputs - batch.targets).abs().amax(dim=2)  # (T, B)
        return (error.masked_fill(~batch.mask, 0.0) < self.tolerance).all(dim=0)

    @property
    def criterion(self) -> StoppingCriterion:
        return StoppingCriterion("window", window=10_000, max_sequences=5_000_000)

    @property
    def paper_sequences(self) -> int | None:
        return 5_040 if self.length == 100 else None
