"""The task interface: a `Batch` of padded, time-major tensors and the `Task` every generator
implements, plus the shared pieces (final-step regression, per-step masked MSE, length sampling).

Shapes: T time (padded to the longest sequence of the batch), B batch, D input size, O output size.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from cellstate.tasks.criterion import StoppingCriterion
from cellstate.validation import integer


@dataclass(frozen=True)
class Batch:
    """One batch of sequences, time-major and zero-padded after each sequence's end.

    inputs:  (T, B, D) float32.
    targets: task-specific (see each task): (B, O) for tasks scored at the last valid step,
             (T, B, O) float or (T, B) int64 for tasks scored at every step.
    lengths: (B,) int64, the true length of each sequence (T everywhere for fixed-length tasks).
    mask:    (T, B) bool, the steps the loss scores, for per-step tasks; None otherwise.
    """

    inputs: Tensor
    targets: Tensor
    lengths: Tensor
    mask: Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        """The same batch on `device`."""
        mask = None if self.mask is None else self.mask.to(device)
        return Batch(self.inputs.to(device), self.targets.to(device), self.lengths.to(device), mask)


class Task(ABC):
    """A seeded generator of one long-time-lag task, with its loss, correctness rule and stopping
    criterion. Subclasses set `name`, `summary`, `default_length` and, in `__init__`,
    `input_size`, `output_size` and `length`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    # None for tasks without a length parameter (reber).
    default_length: ClassVar[int | None]

    input_size: int
    output_size: int
    length: int | None

    @abstractmethod
    def batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        """`batch_size` fresh sequences drawn with `generator` (on its device), deterministic given
        the generator's state."""

    @abstractmethod
    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        """Scalar training loss of `outputs` (T, B, O), a model's output at every step."""

    @abstractmethod
    def correct(self, outputs: Tensor, batch: Batch) -> Tensor:
        """(B,) bool: which sequences `outputs` (T, B, O) processes correctly (the paper's rule)."""

    @property
    @abstractmethod
    def criterion(self) -> StoppingCriterion:
        """The paper's stopping criterion for this task."""

    # Names of the extra test metrics `test_metrics` returns (the trainer logs them).
    test_metric_names: ClassVar[tuple[str, ...]] = ()

    def test_metrics(self, outputs: Tensor, batch: Batch) -> dict[str, float]:
        """Extra metrics of `outputs` (T, B, O) on a test batch, each a mean over the batch's
        sequences, keyed by `test_metric_names`; none by default."""
        return {}

    @property
    def paper_sequences(self) -> int | None:
        """Training sequences the 1997 paper (or the cited successor) needed at this setting, or
        None where no figure was published for it."""
        return None

    @property
    def baseline_loss(self) -> float | None:
        """The test loss of the best memoryless model, where the task states it (copy); None
        elsewhere."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(length={self.length})"

    def _check_outputs(self, outputs: Tensor, batch: Batch) -> None:
        expected = (batch.inputs.shape[0], batch.inputs.shape[1], self.output_size)
        if tuple(outputs.shape) != expected:
            raise ValueError(
                f"{self.name}: outputs must have shape (T, B, output_size) = {expected}, "
                f"got {tuple(outputs.shape)}"
            )


class FinalStepTask(Task):
    """A task scored only at each sequence's last valid step, with MSE as in the 1997 paper.

    targets: (B, O) float. A sequence is correct when every output's absolute error at that step is
    below `tolerance`.
    """

    tolerance: ClassVar[float]

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        """MSE between the outputs at the last valid step and the targets, averaged over B and O."""
        self._check_outputs(outputs, batch)
        return torch.mean((last_step(outputs, batch.lengths) - batch.targets) ** 2)

    def correct(self, outputs: Tensor, batch: Batch) -> Tensor:
        """(B,) bool: every output error at the last valid step below `tolerance`."""
        self._check_outputs(outputs, batch)
        error = (last_step(outputs, batch.lengths) - batch.targets).abs()  # (B, O)
        return (error < self.tolerance).all(dim=1)


def last_step(outputs: Tensor, lengths: Tensor) -> Tensor:
    """(B, O): `outputs` (T, B, O) at each sequence's last valid step, lengths[b] - 1."""
    batch_index = torch.arange(outputs.shape[1], device=outputs.device)
    return outputs[lengths.to(outputs.device) - 1, batch_index]


def masked_mse(outputs: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the (step, unit) entries of the steps where `mask` (T, B) holds."""
    squared = ((outputs - targets) ** 2).sum(dim=2)  # (T, B)
    return (squared * mask).sum() / (mask.sum() * outputs.shape[2])


def valid_steps(lengths: Tensor, steps: int) -> Tensor:
    """(T, B) bool: True where step t < lengths[b]."""
    return torch.arange(steps, device=lengths.device)[:, None] < lengths[None, :]


def one_hot(symbols: Tensor, num_classes: int) -> Tensor:
    """(T, B, C) float32 one-hot of `symbols` (T, B) int64; entries < 0 (padding) give zero rows."""
    out = torch.zeros(*symbols.shape, num_classes, device=symbols.device)
    # Scatter the validity flag into float zeros: F.one_hot would materialise an int64 tensor 2x
    # the size, and masking afterwards another copy (256 MB per batch for long-lag at p = 1000).
    valid = (symbols >= 0).unsqueeze(2).to(out.dtype)
    return out.scatter_(2, symbols.clamp(min=0).unsqueeze(2), valid)


def sample_lengths(batch_size: int, length: int, generator: torch.Generator) -> Tensor:
    """(B,) int64 lengths uniform in [length, length + length // 10] (the 1997 "T to T + T/10")."""
    return length + torch.randint(
        0, length // 10 + 1, (batch_size,), generator=generator, device=generator.device
    )


def check_int(task: str, argument: str, value: object, minimum: int) -> int:
    """`value` if it is an int >= minimum, else ValueError naming the task and argument."""
    integer(f"{task}: {argument}", value, minimum)
    return value
