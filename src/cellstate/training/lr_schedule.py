"""Reduce-on-plateau: the learning rate is cut by a factor when the test loss stops falling.

After each periodic evaluation on the held-out set: a test loss below best * (1 - THRESHOLD) is
progress (it becomes the best and the count of stalled evaluations restarts); otherwise the count
goes up, and when it reaches `patience` the lr is cut (multiplied by `decay`) and the count
restarts. Stalls count only once learning has begun, once the best is START below the first
evaluation's loss and, where the task has a memoryless baseline loss (copy), below half of it:
a plateau before that is the task's initial one (adding at T = 10,000 sat on the
mean-prediction baseline for up to 100,000 sequences), which a smaller step would only prolong.
The baseline test is there because the first alone was not enough: copy at T = 1000 starts above
its baseline, fell 11% below it by learning the blanks and a few symbols, and sat there at 80%
symbol error while the lr was cut at every second evaluation, to 2.2e-6 (RESULTS.md).
At a cut the best becomes the loss cut at, so that progress after it is measured from there:
measured against the best before a spike (copy T = 1000 at 640,000), every evaluation of the
recovery was a stall and the lr was cut at every second one, 0.01 -> 8.1e-5 (RESULTS.md).
After k cuts the lr is lr * decay**k, computed from k so that a resumed run sets the same float,
and never below a floor (the trainer's lr_min), where the cuts end: without one, once the test
loss flattens the lr is cut at every `patience`-th evaluation, without end (copy at T = 1000 sat
at lr ~1e-22 for 600,000 sequences: RESULTS.md). The state is four numbers, carried in the
trainer's checkpoint.

Example (patience 2, decay 0.3): test losses 0.20, 0.15, 0.149, 0.150 -> the lr is cut once, at
the fourth evaluation (0.149 and 0.150 are not 1% below 0.15); the lr is then 0.3 lr.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

THRESHOLD = 0.01  # a fall of less than 1% of the best test loss is no progress
START = 0.1  # learning has begun once the test loss is 10% below the first evaluation's
BELOW_BASELINE = 0.5  # ... and below half the memoryless baseline, where the task has one


@dataclass
class Plateau:
    """first: the first evaluation's test loss; best: the lowest seen since the last cut (or the
    loss cut at); stalled: evaluations since the last progress or cut, once learning has begun;
    cuts: how many times the lr was cut."""

    first: float | None = None
    best: float = math.inf
    stalled: int = 0
    cuts: int = 0

    def update(self, test_loss: float, patience: int, baseline: float | None = None) -> bool:
        """Record one evaluation's test loss; True when the lr is cut now. baseline: the task's
        memoryless loss (None: it has none)."""
        if self.first is None:
            self.first = test_loss
        if test_loss < self.best * (1 - THRESHOLD):
            self.best, self.stalled = test_loss, 0
            return False
        if not self.best < self.first * (1 - START):  # still on the initial plateau
            return False
        if baseline is not None and not self.best < baseline * BELOW_BASELINE:
            return False
        self.stalled += 1
        if self.stalled < patience:
            return False
        self.stalled, self.cuts, self.best = 0, self.cuts + 1, test_loss
        return True


def scheduled_lr(lr: float, decay: float, cuts: int, floor: float = 0.0) -> float:
    """The step after `cuts` cuts: lr * decay**cuts, at least `floor`."""
    return max(lr * decay**cuts, floor)
