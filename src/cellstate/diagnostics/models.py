"""The models the diagnostics look at: the lab's default configuration at initialisation, or a
model trained by ``cellstate train`` (its checkpoint)."""

from __future__ import annotations

from pathlib import Path

import torch

from cellstate.training import checkpoint as ckpt
from cellstate.training.config import ModelConfig, RunConfig, TaskConfig
from cellstate.training.model import SequenceModel


def default_config(kind: str, task: str = "adding", length: int | None = None) -> RunConfig:
    """The run configuration ``cellstate train --model KIND --task TASK --length T`` uses."""
    return RunConfig(TaskConfig(task, length), ModelConfig(kind=kind))


def build_model(config: RunConfig, seed: int = 0) -> SequenceModel:
    """The model ``config`` describes, at initialisation, drawn after torch.manual_seed(seed)."""
    torch.manual_seed(seed)
    return SequenceModel(config.model, config.task.build())


def load_model(path: str | Path) -> tuple[SequenceModel, RunConfig]:
    """The trained model in a checkpoint written by ``cellstate train``, and its run config."""
    state = ckpt.load(path)
    config = RunConfig.from_dict(state["config"])
    model = SequenceModel(config.model, config.task.build())
    model.load_state_dict(state["model"])
    return model.eval(), config
