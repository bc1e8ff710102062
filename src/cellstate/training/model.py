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

    With ``config.input_to_output`` the head also reads the step's input:
    outputs = squash(head(h_t) + W_direct x_t), W_direct (O, D) without bias. With
    ``config.zero_head`` the head's weights (not its bias) start at zero.

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
        if config.zero_head:
            nn.init.zeros_(self.head.weight)
        self.direct = (
            nn.Linear(D, task.output_size, bias=False, dtype=dtype)
            if config.input_to_output
            else None
        )
        self.squash = output_kind(config, task) == "sigmoid"

    def forward(self, inputs: Tensor) -> Tensor:
        return self.readout(self.recurrent(inputs)[0], inputs)

    def readout(self, hidden: Tensor, inputs: Tensor) -> Tensor:
        """The outputs (..., O) from the top layer's hidden states (..., H) and the inputs
        (..., D) of the same steps."""
        outputs = self.head(hidden)
        if self.direct is not None:
            outputs = outputs + self.direct(inputs)
        return torch.sigmoid(outputs) if self.squash else outputs


def output_kind(config: ModelConfig, task: Task) -> str:
    """The head's output nonlinearity: "auto" means sigmoid, except for the cross-entropy task
    (copy), whose outputs are logits."""
    if config.output != "auto":
        return config.output
    return "linear" if isinstance(task, CopyTask) else "sigmoid"
