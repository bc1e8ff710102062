"""The temporal order problems of 1997 (experiments 6a and 6b)."""

from __future__ import annotations

from typing import ClassVar

import torch

from cellstate.tasks.base import Batch, FinalStepTask, check_int, one_hot, sample_lengths
from cellstate.tasks.criterion import StoppingCriterion

SYMBOLS = "abcdXYBE"  # one-hot input index of each symbol
_A, _X, _B, _E = 0, 4, 6, 7


class TemporalOrderTask(FinalStepTask):
    """1997 experiment 6a: classify a sequence by the order of two symbols X/Y far apart.

    A sequence of length uniform in [T, T + T // 10] (the paper's 100-110 at T = 100) starts with
    E, ends with B, and is filled with random symbols from {a, b, c, d}, except at t1 in [10, 20]
    and t2 in [50, 60] (0-based steps), each X or Y. The class is the pair: XX, XY, YX, YY
    (index 2 * [s1 = Y] + [s2 = Y]). For another length T the windows scale by T / 100, rounded
    to the nearest step (T = 200: t1 in [20, 40], t2 in [100, 120]).

    inputs (T, B, 8) one-hot over "abcdXYBE", zero-padded; targets (B, 4) one-hot class;
    lengths (B,); no mask. Loss: MSE at each sequence's last valid step (the paper's).
    Correct: every output's absolute error below 0.3. Criterion: ST3(0.1) over 2000 sequences.

    Example (T = 10, length 11, t1 = 1, t2 = 6), as symbols:
        E Y c a d b X a c d B    -> class YX = 2, target [0, 0, 1, 0]
    """

    name = "temporal-order"
    summary = "1997 exp. 6a: classify the order of 2 symbols X/Y in noise; 4 classes"
    default_length = 100
    tolerance = 0.3
    # Windows of the X/Y positions at T = 100, inclusive.
    windows: ClassVar[tuple[tuple[int, int], ...]] = ((10, 20), (50, 60))
    _paper: ClassVar[int] = 31_390

    def __init__(self, length: int = 100) -> None:
        self.length = check_int(self.name, "length", length, 10)
        self.input_size = len(SYMBOLS)
        self.output_size = 2 ** len(self.windows)
        scale = self.length / 100
        # Round half up (Python's round() rounds half to even).
        self.positions = tuple(
            (int(lo * scale + 0.5), int(hi * scale + 0.5)) for lo, hi in self.windows
        )

    def batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        check_int(self.name, "batch_size", batch_size, 1)
        device = generator.device
        lengths = sample_lengths(batch_size, self.length, generator)
        steps = int(lengths.max())
        symbols = torch.randint(_A, _A + 4, (steps, batch_size), generator=generator, device=device)
        batch_index = torch.arange(batch_size, device=device)
        symbols[0] = _E
        symbols[lengths - 1, batch_index] = _B
        label = torch.zeros(batch_size, dtype=torch.int64, device=device)
        for lo, hi in self.positions:
            step = torch.randint(lo, hi + 1, (batch_size,), generator=generator, device=device)
            is_y = torch.randint(0, 2, (batch_size,), generator=generator, device=device)
            symbols[step, batch_index] = _X + is_y
            label = 2 * label + is_y
        padding = torch.arange(steps, device=device)[:, None] >= lengths[None, :]
        inputs = one_hot(symbols.masked_fill(padding, -1), self.input_size)  # (T, B, 8)
        targets = one_hot(label[None], self.output_size)[0]  # (B, C)
        return Batch(inputs, targets, lengths)

    @property
    def criterion(self) -> StoppingCriterion:
        return StoppingCriterion("st3", beta=0.1, window=2000)

    @property
    def paper_sequences(self) -> int | None:
        return self._paper if self.length == 100 else None


class TemporalOrder3Task(TemporalOrderTask):
    """1997 experiment 6b: as `TemporalOrderTask` with three X/Y symbols and 8 classes.

    The symbols sit at t1 in [10, 20], t2 in [33, 43], t3 in [66, 76] (scaled by T / 100); the
    class is 4 * [s1 = Y] + 2 * [s2 = Y] + [s3 = Y], targets (B, 8) one-hot. Same loss,
    correctness rule (every output error below 0.3) and criterion (ST3(0.1)).

    Example (T = 10, length 10, t1 = 2, t2 = 4, t3 = 7), as symbols:
        E d X b Y a c X d B    -> class XYX = 2, target [0, 0, 1, 0, 0, 0, 0, 0]
    """

    name = "temporal-order-3"
    summary = "1997 exp. 6b: classify the order of 3 symbols X/Y in noise; 8 classes"
    windows = ((10, 20), (33, 43), (66, 76))
    _paper = 571_100
