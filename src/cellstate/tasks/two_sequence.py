"""The two-sequence problem, signal and noise on one channel (1997 experiments 3a, 3b, 3c)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from cellstate.tasks.base import (
    Batch,
    FinalStepTask,
    check_int,
    last_step,
    sample_lengths,
    valid_steps,
)
from cellstate.tasks.criterion import StoppingCriterion

NOISE_VARIANCE = 0.2
# 3c: the class targets and the variance of the Gaussian noise added to them (see
# TwoSequenceNoisyTargetTask for where these come from).
TARGETS_3C = (0.2, 0.8)
TARGET_NOISE_VARIANCE = 0.1


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
    default_informative = 3
    tolerance = 0.2
    # 3b: the informative inputs get noise of the same distribution as the rest added to them.
    noisy_signal: ClassVar[bool] = False
    _paper: ClassVar[dict[tuple[int, int], int]] = {
        (100, 3): 27_380,
        (100, 1): 58_370,
        (1000, 3): 446_850,
    }

    def __init__(self, length: int = 100, n_informative: int = default_informative) -> None:
        self.n_informative = check_int(self.name, "n_informative", n_informative, 1)
        self.length = check_int(self.name, "length", length, n_informative + 1)
        self.input_size = 1
        self.output_size = 1

    def batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        inputs, label, lengths = self._sequences(batch_size, generator)
        return Batch(inputs, label.to(inputs.dtype).unsqueeze(1), lengths)

    def _sequences(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, ...]:
        """inputs (T, B, 1), the class (B,) int64 and lengths (B,)."""
        check_int(self.name, "batch_size", batch_size, 1)
        device = generator.device
        lengths = sample_lengths(batch_size, self.length, generator)
        steps = int(lengths.max())
        label = torch.randint(0, 2, (batch_size,), generator=generator, device=device)
        noise = torch.randn(steps, batch_size, generator=generator, device=device)
        inputs = noise * math.sqrt(NOISE_VARIANCE)  # (T, B)
        signal = (2 * label - 1).to(inputs.dtype)  # (B,)
        n = self.n_informative
        inputs[:n] = signal + inputs[:n] if self.noisy_signal else signal.expand(n, -1)
        inputs = inputs * valid_steps(lengths, steps)
        return inputs.unsqueeze(2), label, lengths

    @property
    def criterion(self) -> StoppingCriterion:
        return StoppingCriterion("test", test_size=256)

    @property
    def paper_sequences(self) -> int | None:
        return self._paper.get((self.length, self.n_informative))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(length={self.length}, n_informative={self.n_informative})"


class TwoSequenceNoisySignalTask(TwoSequenceTask):
    """1997 experiment 3b: 3a with Gaussian noise (mean 0, variance 0.2) added to the N
    informative inputs too, so that they read +-1 + noise.

    The class is then not always recoverable: the best possible rule (the sign of the first N
    inputs' sum) errs with probability Phi(-sqrt(5 N)), 1.3% at N = 1 and 5e-5 at N = 3.
    Everything else as in 3a; no paper figure is at hand for 3b.
    """

    name = "two-sequence-3b"
    summary = "1997 exp. 3b: as 3a, with Gaussian noise on the N informative inputs too"
    noisy_signal = True
    _paper = {}


class TwoSequenceNoisyTargetTask(TwoSequenceNoisySignalTask):
    """1997 experiment 3c: 3b with real-valued, noisy targets.

    The noise-free target is 0.2 (class 0, informative inputs around -1) or 0.8 (class 1);
    training sees it plus Gaussian noise of mean 0 and variance 0.1, so that the MSE-optimal
    output is the noise-free target. A sequence is correct when the output at its last step is
    within 0.1 of the noise-free target.

    targets (B, 2): column 0 the noisy target the loss uses, column 1 the noise-free one.
    Criterion: no sequence of 256 fresh test sequences off by 0.1 or more (which implies a mean
    absolute difference below 0.1); the test metric `clean_abs_error` is that mean.
    """

    name = "two-sequence-3c"
    summary = "1997 exp. 3c: as 3b, with targets 0.2/0.8 plus Gaussian noise (variance 0.1)"
    tolerance = 0.1
    test_metric_names = ("clean_abs_error",)

    def batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        inputs, label, lengths = self._sequences(batch_size, generator)
        low, high = TARGETS_3C
        clean = low + (high - low) * label.to(inputs.dtype)  # (B,)
        noise = torch.randn(batch_size, generator=generator, device=generator.device)
        noisy = clean + noise * math.sqrt(TARGET_NOISE_VARIANCE)
        return Batch(inputs, torch.stack([noisy, clean], dim=1), lengths)

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        """MSE between the output at the last valid step and the noisy target."""
        self._check_outputs(outputs, batch)
        return torch.mean((last_step(outputs, batch.lengths)[:, 0] - batch.targets[:, 0]) ** 2)

    def correct(self, outputs: Tensor, batch: Batch) -> Tensor:
        """(B,) bool: the output at the last valid step within 0.1 of the noise-free target."""
        return self._clean_error(outputs, batch) < self.tolerance

    def test_metrics(self, outputs: Tensor, batch: Batch) -> dict[str, float]:
        return {"clean_abs_error": float(self._clean_error(outputs, batch).mean())}

    def _clean_error(self, outputs: Tensor, batch: Batch) -> Tensor:
        """(B,) |output at the last valid step - noise-free target|."""
        self._check_outputs(outputs, batch)
        return (last_step(outputs, batch.lengths)[:, 0] - batch.targets[:, 1]).abs()
