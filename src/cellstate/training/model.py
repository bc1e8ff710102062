"""The trained model: a cellstate.LSTM or cellstate.RNN and a linear head at every step."""

from __future__ import annotations

import torch
from torch import Tensor, nn

import cellstate
from cellstate.init import input_gate_weights_
from cellstate.tasks import CopyTask, Task
from cellstate.training.config import DEFAULT_HIDDEN, ModelConfig, task_default


class SequenceModel(nn.Module):
    """inputs (T, B, D) -> outputs (T, B, O): recurrent layer, linear head, optional sigmoid.

    Example:
        model = SequenceModel(ModelConfig(kind="lstm", hidden=32, t_max=150.0), task)
        outputs = model(batch.inputs)  # (T, B, task.output_size)
    """

    def __init__(self, config: ModelConfig, task: Task) -> None:
        super().__init__()
        dtype = getattr(torch, config.dtype)
        D, H = task.input_size, config.hidden or task_default(task.name, "hidden", DEFAULT_HIDDEN)
        if config.kind == "lstm":
            self.recurrent = cellstate.LSTM(
                D,
                H,
                dtype=dtype,
                init=config.init,
                t_max=config.t_max if config.init == "chrono" else None,
                forget_bias=config.forget_bias,
                backend=config.backend,
            )
            if config.input_gate_bound is not None:
                for name, weight in self.recurrent.named_parameters():
                    if name.startswith("weight_ih"):
                        input_gate_weights_(weight, H, config.input_gate_bound)
        else:
            self.recurrent = cellstate.RNN(D, H, dtype=dtype, backend=config.backend)
            if config.init == "orthogonal":
                with torch.no_grad():
                    nn.init.orthogonal_(self.recurrent.weight_hh_l0)
        self.head = nn.Linear(H, task.output_size, dtype=dtype)
        self.squash = output_kind(config, task) == "sigmoid"

    def forward(self, inputs: Tensor) -> Tensor:
        hidden = self.recurrent(inputs)[0]  # (T, B, H)
        outputs = self.head(hidden)  # (T, B, O)
        return torch.sigmoid(outputs) if self.squash else outputs


def output_kind(config: ModelConfig, task: Task) -> str:
    """The head's output nonlinearity: "auto" means sigmoid, except for the cross-entropy task
    (copy), whose outputs are logits."""
    if config.output != "auto":
        return config.output
    return "linear" if isinstance(task, CopyTask) else "sigmoid"
