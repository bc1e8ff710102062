"""Very long time lags with distractors and a random trigger (1997 experiment 2c)."""

from __future__ import annotations

import math

import torch

from cellstate.tasks.base import Batch, FinalStepTask, check_int, one_hot
from cellstate.tasks.criterion import StoppingCriterion

TRIGGER_PROBABILITY = 0.1


class LongLagDistractorsTask(FinalStepTask):
    """1997 experiment 2c: after a long, random run of distractors and a trigger e, recall X.

    Symbols: p distractors d_1 .. d_p, then b, e, x, y (one-hot indices 0 .. p-1, p, p+1, p+2,
    p+3). A sequence reads b, X (x or y, probability 1/2), q distractors, then further elements
    that are each a distractor with probability 9/10 or the trigger e with probability 1/10,
    ending at e; every distractor is uniform over the p symbols. After e the model must output X.
    The input is q + 3 + k steps long, k ~ Geometric(1/10) >= 0 (mean 9): expected q + 12 inputs,
    q + 13 symbols with the final X, minimal lag q + 1 from X to e. (The reference quotes an
    expected length of q + 14; the generation rule above is the one it states.)

    inputs (T, B, p + 4) one-hot, zero-padded; targets (B, 2) one-hot over (x, y); lengths (B,).
    Loss: MSE at each sequence's last valid step (the e step). Correct: both output errors below
    0.2. Criterion: 10,000 successive sequences correct.

    Example (q = 2, p = 2, symbols d1 d2 b e x y = indices 0 .. 5), k = 1:
        b  y  d2 d1 d1 e  -> 2 5 1 0 0 3    target (x, y) = [0, 1]
    """

    name = "long-lag-distractors"
    summary = "1997 exp. 2c: recall x/y after q+ distractors when a random trigger appears"
    default_length = 100
    tolerance = 0.2
    _paper = {50: 30_000, 100: 31_000, 200: 33_000, 500: 38_000, 1000: 49_000}

    def __init__(self, length: int = 100, n_distractors: int | None = None) -> None:
        """length is q, the fixed number of distractors; n_distractors is p, default q (as in
        every published run)."""
        self.length = check_int(self.name, "length", length, 1)
        p = length if n_distractors is None else n_distractors
        self.n_distractors = check_int(self.name, "n_distractors", p, 1)
        self.input_size = self.n_distractors + 4
        self.output_size = 2

    def batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        check_int(self.name, "batch_size", batch_size, 1)
        p, device = self.n_distractors, generator.device
        b, e, x = p, p + 1, p + 2
        # Inverse-CDF draw of the number of extra distractors: P(k) = 0.1 * 0.9^k.
        u = torch.rand(batch_size, generator=generator, device=device)
        extra = torch.floor(torch.log1p(-u) / math.log1p(-TRIGGER_PROBABILITY)).long()
        lengths = self.length + 3 + extra
        steps = int(lengths.max())
        batch_index = torch.arange(batch_size, device=device)
        symbols = torch.randint(0, p, (steps, batch_size), generator=generator, device=device)
        is_y = torch.randint(0, 2, (batch_size,), generator=generator, device=device)
        symbols[0] = b
        symbols[1] = x + is_y
        symbols[lengths - 1, batch_index] = e
        padding = torch.arange(steps, device=device)[:, None] >= lengths[None, :]
        inputs = one_hot(symbols.masked_fill(padding, -1), self.input_size)  # (T, B, p + 4)
        targets = one_hot(is_y[None], 2)[0]  # (B, 2)
        return Batch(inputs, targets, lengths)

    @property
    def criterion(self) -> StoppingCriterion:
        return StoppingCriterion("window", window=10_000)

    @property
    def paper_sequences(self) -> int | None:
        return self._paper.get(self.length) if self.n_distractors == self.length else None

    def __repr__(self) -> str:
        return f"LongLagDistractorsTask(length={self.length}, n_distractors={self.n_distractors})"
