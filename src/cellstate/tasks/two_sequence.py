"""The two-sequence problem, signal and noise on one channel (1997 experiment 3a)."""

from __future__ import annotations

import math

import torch

from cellstate.tasks.base import Batch, FinalStepTask, check_int, sample_lengths, valid_steps
from cellstate.tasks.criterion import StoppingCriterion

NOISE_VARIANCE = 0.2


class TwoSequenceTask(FinalStepTask):
    """1997 experiment 3a: classify a sequence by its first N inputs, followed by pure noise.

    One input channel. Class 1 sequences start with N inputs +1, class 0 sequences with N inputs
    -1 (each class with probability 1/2); every later input is Gaussian noise with mean 0 and
    variance 0.2. Lengths are uniform in [T, T + T // 10]; inputs are zero-padded.

    inputs (T, B, 1), targets (B, 1) = 1.0 or 0.0, lengths (B,), no mask.
    Loss: MSE at each sequence's last valid step. Correct: |error| < 0.2.
    Criterion: no misclassification on 256 fresh test sequences (the paper's ST1).

    Example (T = 10, N = 3, class 1, length 10):
        1.00 1.00 1.00 -0.31 0.52 0.08 -0.66 0.24 0.17 -0.40    target 1.0
    """

    name = "two-sequence"
    summary = "1997 exp. 3a: class given by the first N inputs (+-1), then Gaussian noise"
    default_length = 100
    tolerance = 0.2
    _paper = {(100, 3): 27_380, (100, 1): 58_370, (1000, 3): 446_850}

    def __init__(self, length: int = 100, n_informative: int = 3) -> None:
        self.n_informative = check_int(self.name, "n_informative", n_informative, 1)
        self.length = check_int(self.name, "length", length, n_informative + 1)
        self.input_size = 1
        self.output_size = 1

    def batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        check_int(self.name, "batch_size", batch_size, 1)
        device = generator.device
        lengths = sample_lengths(batch_size, self.length, generator)
        steps = int(lengths.max())
        label = torch.randint(0, 2, (batch_size,), generator=generator, device=device)
        noise = torch.randn(steps, batch_size, generator=generator, device=device)
        inputs = noise * math.sqrt(NOISE_VARIANCE)  # (T, B)
        inputs[: self.n_informative] = (2 * label - 1).to(inputs.dtype)
        inputs = inputs * valid_steps(lengths, steps)
        targets = label.to(inputs.dtype).unsqueeze(1)  # (B, 1)
        return Batch(inputs.unsqueeze(2), targets, lengths)

    @property
    def criterion(self) -> StoppingCriterion:
        return StoppingCriterion("test", test_size=256)

    @property
    def paper_sequences(self) -> int | None:
        return self._paper.get((self.length, self.n_informative))

    def __repr__(self) -> str:
        return f"TwoSequenceTask(length={self.length}, n_informative={self.n_informative})"
