"""The adding problem of 1997 (experiment 4)."""

from __future__ import annotations

import torch
from torch import Tensor

from cellstate.tasks.base import Batch, FinalStepTask, check_int, sample_lengths, valid_steps
from cellstate.tasks.criterion import StoppingCriterion


def marked_pairs(
    batch_size: int, length: int, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The 1997 marker layout shared by the adding and multiplication problems.

    Returns lengths (B,) uniform in [T, T + T // 10]; first (B,), the position of X1, uniform over
    the first 10 pairs; second (B,), the position of X2, uniform over the first T // 2 - 1 pairs
    that are not yet marked; markers (T_max, B): 1 at the two marked pairs, -1 at the first and
    last pair of each sequence unless marked, 0 elsewhere and in the padding.
    """
    device = generator.device
    lengths = sample_lengths(batch_size, length, generator)
    first = torch.randint(0, 10, (batch_size,), generator=generator, device=device)
    # Index among the first T//2 - 1 unmarked pairs, shifted past X1 to skip the marked pair.
    second = torch.randint(0, length // 2 - 1, (batch_size,), generator=generator, device=device)
    second = second + (second >= first)
    batch_index = torch.arange(batch_size, device=device)
    markers = torch.zeros(int(lengths.max()), batch_size, device=device)  # (T, B)
    markers[0] = -1.0
    markers[lengths - 1, batch_index] = -1.0
    # Written after the -1s: a marked first pair carries 1, as every marked pair does.
    markers[first, batch_index] = 1.0
    markers[second, batch_index] = 1.0
    return lengths, first, second, markers


class AddingTask(FinalStepTask):
    """The 1997 adding problem: remember two marked values across up to T steps and add them.

    Each step is a pair (value, marker). Values are uniform in [-1, 1]; markers are built by
    `marked_pairs` (two pairs marked 1, first and last pair -1, the rest 0). When the first pair
    is marked (the paper's "rare case"; it can be picked as X1 or, since it is among the first
    T/2 - 1 unmarked pairs, as X2), its value is set to 0, as the paper sets X1 = 0. Lengths are
    uniform in [T, T + T // 10]; inputs are zero-padded after each sequence's end.

    inputs (T, B, 2), targets (B, 1) = 0.5 + (X1 + X2) / 4 in [0, 1], lengths (B,), no mask.
    Loss: MSE at each sequence's last valid step (the paper's). Correct: |error| < 0.04.
    Criterion: ST3(0.01) over the 2000 most recent sequences.

    Example (T = 11, length 12): value, marker per step
        [ 0.31, -1] [-0.74, 0] [ 0.52, 1] [ 0.10, 0] [-0.20, 1] [ 0.66, 0] ... [ 0.05, -1]
        target 0.5 + (0.52 - 0.20) / 4 = 0.58
    """

    name = "adding"
    summary = "1997 exp. 4: add two marked values in [-1, 1]; target 0.5 + (X1 + X2) / 4"
    default_length = 100
    tolerance = 0.04
    _paper = {100: 74_000, 500: 209_000, 1000: 853_000}

    def __init__(self, length: int = 100) -> None:
        # T >= 11: X1, one of the first 10 pairs, never lands on the last pair (the -1 end marker).
        self.length = check_int(self.name, "length", length, 11)
        self.input_size = 2
        self.output_size = 1

    def batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        check_int(self.name, "batch_size", batch_size, 1)
        lengths, first, second, markers = marked_pairs(batch_size, self.length, generator)
        batch_index = torch.arange(batch_size, device=markers.device)
        values = torch.rand(markers.shape, generator=generator, device=markers.device) * 2 - 1
        values[0] = torch.where(markers[0] == 1, 0.0, values[0])
        values = values * valid_steps(lengths, markers.shape[0])
        targets = 0.5 + (values[first, batch_index] + values[second, batch_index]) / 4
        inputs = torch.stack([values, markers], dim=2)  # (T, B, 2)
        return Batch(inputs, targets.unsqueeze(1), lengths)

    @property
    def criterion(self) -> StoppingCriterion:
        return StoppingCriterion("st3", beta=0.01, window=2000)

    @property
    def paper_sequences(self) -> int | None:
        return self._paper.get(self.length)
