"""The exploding-gradient demo grows, and the clipping demo trains twice from one seed."""

import pytest
import torch

from cellstate.diagnostics.exploding import (
    clipping_demo,
    exploding_flow,
    growth_per_step,
    scale_spectral_radius_,
)
from cellstate.diagnostics.models import default_config
from cellstate.layers.rnn import RNN
from cellstate.training.config import ModelConfig, RunConfig, TaskConfig, TrainingConfig


def test_scale_spectral_radius():
    rnn = scale_spectral_radius_(RNN(2, 8, num_layers=2), 2.5)
    for layer in range(2):
        radius = torch.linalg.eigvals(getattr(rnn, f"weight_hh_l{layer}")).abs().max()
        assert radius.item() == pytest.approx(2.5, rel=1e-5)


def test_scaled_rnn_gradient_explodes_where_the_default_vanishes():
    config = default_config("rnn", "adding", 30)
    scaled = exploding_flow(config, radius=3.0, batch_size=8)
    shrunk = exploding_flow(config, radius=0.5, batch_size=8)
    K = len(scaled.h)
    # Geometric mean growth per step back: above 1 at radius 3, below 1 at radius 0.5.
    assert scaled.h[-1] ** (1 / (K - 1)) > 1
    assert scaled.h[-1] > 100 * scaled.h[1]
    assert shrunk.h[-1] ** (1 / (K - 1)) < 1
    assert growth_per_step(scaled.h).shape == (K - 1,)
    # The radius asked for, up to float32 eigenvalue rounding (a property, not a comparison).
    torch.testing.assert_close(scaled.radius, torch.tensor([3.0]), rtol=1e-5, atol=0)


def test_clipping_demo_trains_the_same_start_with_and_without_clipping():
    config = RunConfig(
        TaskConfig("two-sequence", 12),
        ModelConfig(kind="rnn", hidden=8),
        TrainingConfig(
            optimizer="sgd",
            lr=0.1,
            clip=0.5,
            max_sequences=256,
            eval_every=64,
            checkpoint_every=10**9,
            test_size=256,
        ),
    )
    demo = clipping_demo(config, radius=3.0)
    clipped, unclipped = demo.runs["clipped"], demo.runs["unclipped"]
    assert [r["sequences"] for r in clipped] == [r["sequences"] for r in unclipped]
    # The first step sees the same weights and batch: the same gradient norm, well above the
    # threshold at radius 3, so the clipped run clips and the other does not.
    assert clipped[0]["grad_norm_max"] > config.training.clip
    assert clipped[0]["clipped"] > 0
    assert all(r["clipped"] == 0 for r in unclipped)
    assert demo.from_dict(demo.to_dict()) == demo
