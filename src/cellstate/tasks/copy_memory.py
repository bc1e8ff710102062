"""The copying memory problem (Arjovsky, Shah & Bengio 2016; Tallec & Ollivier 2018)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from cellstate.tasks.base import Batch, Task, check_int, one_hot
from cellstate.tasks.criterion import StoppingCriterion

BLANK, DELIMITER = 0, 9  # data symbols are 1 .. 8
N_DATA, N_COPY = 8, 10


class CopyTask(Task):
    """Copying memory: read 10 symbols, wait T steps, then write them back.

    Input, T + 20 steps over 10 symbols (0 blank, 1-8 data, 9 delimiter): 10 data symbols drawn
    uniformly from the 8, T - 1 blanks, the delimiter, 10 blanks. Target at every step: blank for
    the first T + 10 steps, then the 10 data symbols in order.

    inputs (T + 20, B, 10) one-hot; targets (T + 20, B) int64 class indices in 0 .. 8; lengths (B,)
    all T + 20; mask (T + 20, B) all True. The model has 9 outputs, logits over blank and the 8
    data symbols (the delimiter is never a target).
    Loss: cross-entropy averaged over every step, as in the modern papers; a memoryless model
    scores 10 log(8) / (T + 20) (`baseline_loss`).
    Correct (cellstate's rule, none was published): the argmax is the target at every step.
    Test metric: the symbol error on the copied part (`test_metrics`), the measure the modern
    papers report. Criterion (cellstate's choice, none was published): the symbol error on the
    held-out set below 1%, checked at every evaluation. (2000 successive training sequences with
    every symbol right, the criterion before, did not hold at 0.6%: ~5% of sequences keep one
    wrong symbol; RESULTS.md.)

    Example (T = 3, with 3 data symbols instead of 10 to fit): input 5 2 7 0 0 9 0 0 0,
    target 0 0 0 0 0 0 5 2 7.
    """

    name = "copy"
    summary = "copying memory (2016): reproduce 10 symbols after a gap of T blanks; cross-entropy"
    default_length = 100

    def __init__(self, length: int = 100) -> None:
        self.length = check_int(self.name, "length", length, 1)
        self.input_size = N_DATA + 2
        self.output_size = N_DATA + 1

    @property
    def baseline_loss(self) -> float:
        """Cross-entropy of the best memoryless model: blanks exact, data symbols guessed."""
        return N_COPY * math.log(N_DATA) / (self.length + 2 * N_COPY)

    def batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        check_int(self.name, "batch_size", batch_size, 1)
        device, steps = generator.device, self.length + 2 * N_COPY
        data = torch.randint(
            1, N_DATA + 1, (N_COPY, batch_size), generator=generator, device=device
        )
        symbols = torch.full((steps, batch_size), BLANK, dtype=torch.int64, device=device)
        symbols[:N_COPY] = data
        symbols[self.length + N_COPY - 1] = DELIMITER
        targets = torch.full_like(symbols, BLANK)  # (T + 20, B)
        targets[-N_COPY:] = data
        lengths = torch.full((batch_size,), steps, dtype=torch.int64, device=device)
        mask = torch.ones(steps, batch_size, dtype=torch.bool, device=device)
        return Batch(one_hot(symbols, self.input_size), targets, lengths, mask)

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        """Cross-entropy of the logits `outputs` (T, B, 9), averaged over every valid step."""
        self._check_outputs(outputs, batch)
        return F.cross_entropy(outputs[batch.mask], batch.targets[batch.mask])

    def correct(self, outputs: Tensor, batch: Batch) -> Tensor:
        """(B,) bool: the argmax equals the target at every valid step."""
        self._check_outputs(outputs, batch)
        return ((outputs.argmax(dim=2) == batch.targets) | ~batch.mask).all(dim=0)

    @property
    def criterion(self) -> StoppingCriterion:
        return StoppingCriterion("metric", beta=0.01, metric="symbol_error")

    test_metric_names = ("symbol_error",)

    def test_metrics(self, outputs: Tensor, batch: Batch) -> dict[str, float]:
        """symbol_error: the fraction of the 10 copied symbols whose argmax is wrong (the modern
        papers' accuracy measure; chance is 7/8)."""
        self._check_outputs(outputs, batch)
        wrong = outputs[-N_COPY:].argmax(dim=2) != batch.targets[-N_COPY:]  # (10, B)
        return {"symbol_error": float(wrong.float().mean())}
