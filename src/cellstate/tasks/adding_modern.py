"""The modern adding problem of Arjovsky, Shah & Bengio (2016)."""

from __future__ import annotations

import torch

from cellstate.tasks.base import Batch, FinalStepTask, check_int
from cellstate.tasks.criterion import StoppingCriterion


class AddingModernTask(FinalStepTask):
    """The adding problem as used since 2016: fixed length T, one marked value in each half.

    Each step is a pair (value, marker). Values are uniform in [0, 1]; exactly one step of
    [0, T // 2) and one of [T // 2, T) carry marker 1, all others 0. Target X1 + X2 in [0, 2],
    unscaled; predicting 1 scores MSE 1/6 ~ 0.167, the baseline to beat.

    inputs (T, B, 2), targets (B, 1), lengths (B,) all T, no mask.
    Loss: MSE at the last step. No correctness rule or stopping criterion was published for this
    variant; cellstate reuses the 1997 adding ones (|error| < 0.04, ST3(0.01) over 2000
    sequences) so the two variants are measured alike.

    Example (T = 6): value, marker per step
        [0.42, 0] [0.91, 1] [0.13, 0] [0.57, 0] [0.28, 1] [0.75, 0]    target 0.91 + 0.28 = 1.19
    """

    name = "adding-modern"
    summary = "Arjovsky et al. 2016: values in [0, 1], one marker in each half; target X1 + X2"
    default_length = 100
    tolerance = 0.04

    def __init__(self, length: int = 100) -> None:
        self.length = check_int(self.name, "length", length, 2)
        self.input_size = 2
        self.output_size = 1

    def batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        check_int(self.name, "batch_size", batch_size, 1)
        device, half = generator.device, self.length // 2
        values = torch.rand(self.length, batch_size, generator=generator, device=device)
        first = torch.randint(0, half, (batch_size,), generator=generator, device=device)
        second = torch.randint(half, self.length, (batch_size,), generator=generator, device=device)
        batch_index = torch.arange(batch_size, device=device)
        markers = torch.zeros_like(values)  # (T, B)
        markers[first, batch_index] = 1.0
        markers[second, batch_index] = 1.0
        targets = values[first, batch_index] + values[second, batch_index]
        lengths = torch.full((batch_size,), self.length, dtype=torch.int64, device=device)
        return Batch(torch.stack([values, markers], dim=2), targets.unsqueeze(1), lengths)

    @property
    def criterion(self) -> StoppingCriterion:
        return StoppingCriterion("st3", beta=0.01, window=2000)
