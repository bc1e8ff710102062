"""Stopping criteria of the 1997 paper as data, and a monitor a trainer feeds batch by batch.

The unit of effort is the number of training sequences presented until the criterion holds, so
every criterion counts sequences, not batches. Kinds:

- "st3":    ST3(beta): the average training error over the `window` most recent sequences is below
            `beta` AND those `window` sequences were all processed correctly (1997: window 2000).
- "window": the `window` most recent training sequences were all processed correctly
            (experiments 2a and 2c: 10,000 successive sequences).
- "mse":    the average training error over the `window` most recent sequences is below `beta`.
- "test":   a test set of `test_size` fresh sequences is processed without error (ST1), or with
            at most `max_wrong` errors where the paper stopped at a count (multiplication).
- "metric": the task's test metric `metric` on the held-out set is below `beta` (copy: the symbol
            error on the copied part below 1%, the modern papers' measure; no 1997 criterion).

`max_sequences` is the paper's give-up point, where it had one (2a: 5,000,000).

Example (a trainer loop):
    monitor = task.criterion.monitor()
    monitor.update(loss.item(), task.correct(outputs, batch))
    if monitor.satisfied(): ...
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from cellstate.validation import integer, number, one_of

Kind = Literal["st3", "window", "mse", "test", "metric"]
_NEEDS: dict[str, tuple[str, ...]] = {
    "st3": ("beta", "window"),
    "window": ("window",),
    "mse": ("beta", "window"),
    "test": ("test_size",),
    "metric": ("beta",),
}


@dataclass(frozen=True)
class StoppingCriterion:
    """When training on a task counts as solved. See the module docstring for the kinds."""

    kind: Kind
    beta: float | None = None
    window: int | None = None
    test_size: int | None = None
    max_sequences: int | None = None
    max_wrong: int = 0  # "test" only
    metric: str | None = None  # "metric" only: a name in the task's test_metric_names

    def __post_init__(self) -> None:
        one_of("kind", self.kind, sorted(_NEEDS))
        for field in _NEEDS[self.kind]:
            number(f"{self.kind}: {field}", getattr(self, field), above=0)
        if (self.kind == "metric") != (self.metric is not None):
            raise ValueError(
                f"metric: a test metric's name for kind 'metric' only; got {self.metric!r}"
            )
        if self.max_sequences is not None:
            integer("max_sequences", self.max_sequences)
        if self.max_wrong and (self.kind != "test" or not 0 < self.max_wrong < self.test_size):
            raise ValueError(
                f"max_wrong: only for kind 'test', between 0 and test_size; got {self.max_wrong!r}"
            )

    def describe(self) -> str:
        """One line for logs and `cellstate tasks`."""
        text = {
            "st3": f"ST3({self.beta}): mean training error < {self.beta} and the last "
            f"{self.window} sequences all correct",
            "window": f"the last {self.window} training sequences all correct",
            "mse": f"mean training error over the last {self.window} sequences < {self.beta}",
            "test": f"at most {self.max_wrong} of {self.test_size} fresh test sequences wrong"
            if self.max_wrong
            else f"no error on {self.test_size} fresh test sequences",
            "metric": f"{self.metric} on the held-out sequences < {self.beta}",
        }[self.kind]
        if self.max_sequences is not None:
            text += f"; give up after {self.max_sequences} sequences"
        return text

    def monitor(self) -> CriterionMonitor:
        """A fresh monitor that tracks this criterion over one training run."""
        return CriterionMonitor(self)


class CriterionMonitor:
    """Running state of one criterion during training: feed every training batch to `update`,
    every test evaluation to `update_test`, and ask `satisfied()`."""

    def __init__(self, criterion: StoppingCriterion) -> None:
        self.criterion = criterion
        self.sequences = 0  # training sequences presented so far
        self._streak = 0  # most recent consecutive correctly processed training sequences
        # Per-sequence training error of the most recent `window` sequences; each sequence of a
        # batch is charged the batch's mean loss.
        self._errors: deque[float] = deque(maxlen=criterion.window or 0)
        self._test_passed = False

    def update(self, loss: float, correct: Tensor) -> None:
        """Record one training batch: its mean loss and its (B,) bool correctness flags."""
        flags = correct.detach().reshape(-1).to("cpu", torch.bool)
        size = flags.numel()
        self.sequences += size
        wrong = torch.nonzero(~flags)
        # The streak continues through an all-correct batch, else restarts after its last error.
        self._streak = self._streak + size if wrong.numel() == 0 else size - 1 - int(wrong[-1])
        self._errors.extend([float(loss)] * size)

    def update_test(self, correct: Tensor, metrics: dict[str, float] | None = None) -> None:
        """Record a test evaluation: (N,) bool correctness flags of N >= test_size sequences and
        the task's test metrics on them (the "metric" kind reads its one)."""
        if self.criterion.kind == "metric":
            self._test_passed = (metrics or {})[self.criterion.metric] < self.criterion.beta
            return
        size = self.criterion.test_size
        if size is not None and correct.numel() < size:
            raise ValueError(
                f"test: expected at least {size} test sequences, got {correct.numel()}"
            )
        self._test_passed = int((~correct).sum()) <= self.criterion.max_wrong

    def satisfied(self) -> bool:
        """True once the criterion holds."""
        c = self.criterion
        if c.kind in ("test", "metric"):
            return self._test_passed
        all_correct = self._streak >= c.window
        if c.kind == "window":
            return all_correct
        if c.kind == "st3" and not all_correct:
            return False
        return len(self._errors) == c.window and sum(self._errors) / c.window < c.beta

    def gave_up(self) -> bool:
        """True once `max_sequences` sequences were presented (the paper's failure point)."""
        limit = self.criterion.max_sequences
        return limit is not None and self.sequences >= limit
