"""The memory a training step needs, estimated before anything is allocated, so that a run too big
for the machine is refused with the figures instead of being killed by the OOM killer.

A step holds the batch and, for backward, every step's activations. Measured peak growth per
(time step x sequence), in elements, on 2 cores with torch 2.13 (adding task, H = 32 and 128):
LSTM ~7H on the CPU kernel and ~15H on the reference backend, plain RNN ~2H on the kernel; the
estimate rounds these up (ACTIVATIONS) and adds the inputs and outputs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cellstate.tasks import Task
from cellstate.training.config import RunConfig

# Elements kept per time step, sequence and hidden unit: (model kind, reference backend?) -> k.
ACTIVATIONS = {("lstm", False): 8, ("lstm", True): 16, ("rnn", False): 3, ("rnn", True): 8}
GB = 1e9


class TooBig(ValueError):
    """The run needs more memory than the machine has."""


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (None where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def step_bytes(config: RunConfig, task: Task) -> int:
    """Roughly the peak bytes of one training step (batch, activations kept for backward)."""
    m, t = config.model, config.training
    steps = int(1.1 * (task.length or 40)) + 40  # the longest sequences of a batch, padded
    reference = m.backend == "reference" or t.device != "cpu"
    per_step = ACTIVATIONS[(m.kind, reference)] * m.hidden + 4 * (
        task.input_size + task.output_size
    )
    element = torch.finfo(getattr(torch, m.dtype)).bits // 8
    return steps * t.batch_size * per_step * element


def check(config: RunConfig, task: Task) -> None:
    """TooBig naming what the run needs, what the machine has and what to lower."""
    if config.training.device != "cpu":  # the GPU's memory is another matter
        return
    needed, available = step_bytes(config, task), available_bytes()
    if available is None or needed <= available:
        return
    lag = f"lag {task.length:,}, " if task.length is not None else ""
    raise TooBig(
        f"this run needs ~{needed / GB:,.1f} GB for a training step ({lag}batch "
        f"{config.training.batch_size}, hidden {config.model.hidden}), but the machine has "
        f"{available / GB:,.1f} GB available; lower --length, --batch-size or --hidden"
    )
