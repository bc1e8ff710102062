"""Gradient-norm clipping: the returned (logged) norm is the true pre-clip norm, and a norm above
the threshold comes out exactly at the threshold."""

import json

import pytest
import torch
from torch import nn

from cellstate.training.config import ModelConfig, RunConfig, TaskConfig, TrainingConfig
from cellstate.training.trainer import Trainer, clip_gradients
from tests.differential import EXACT


def _model_with_gradients(scale: float) -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    (model(torch.randn(7, 3, dtype=torch.float64)).sum() * scale).backward()
    return model


def _norm(model: nn.Module) -> float:
    return float(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).norm())


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_returns_true_norm_and_clips_to_threshold(scale):
    model = _model_with_gradients(scale)
    before = [p.grad.clone() for p in model.parameters()]
    true_norm = _norm(model)
    threshold = 0.5
    logged = clip_gradients(model.parameters(), threshold)
    assert logged == pytest.approx(true_norm, rel=1e-12)
    if true_norm > threshold:
        assert _norm(model) == pytest.approx(threshold, rel=1e-5)
        # Clipping only rescales: every gradient keeps its direction.
        for p, g in zip(model.parameters(), before, strict=True):
            torch.testing.assert_close(p.grad, g * (_norm(model) / true_norm))
    else:
        for p, g in zip(model.parameters(), before, strict=True):
            torch.testing.assert_close(p.grad, g, **EXACT)


def test_threshold_zero_only_measures():
    model = _model_with_gradients(1e3)
    before = [p.grad.clone() for p in model.parameters()]
    assert clip_gradients(model.parameters(), 0.0) == pytest.approx(_norm(model), rel=1e-12)
    for p, g in zip(model.parameters(), before, strict=True):
        torch.testing.assert_close(p.grad, g, **EXACT)


def test_trainer_logs_pre_clip_norm(tmp_path):
    """With a tiny threshold every step is clipped, and the log shows the norms above it."""
    config = RunConfig(
        TaskConfig("adding", 11),
        ModelConfig(hidden=4),
        TrainingConfig(batch_size=8, clip=1e-4, max_sequences=64, eval_every=64, test_size=64),
    )
    Trainer(config, tmp_path, progress=False).run()
    line = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert line["clipped"] == 1.0
    assert line["grad_norm"] > 1e-4 and line["grad_norm_max"] >= line["grad_norm"]
