"""Exploding gradients and clipping (seed sections 2 and 3), shown on the plain RNN.

Scaling W_hh so that its spectral radius exceeds 1 turns the vanishing product of step Jacobians
into a growing one; gradient-norm clipping (g <- threshold * g / ||g|| when ||g|| >= threshold)
bounds the update such a gradient causes. Both are measured here: the gradient flow of the
scaled RNN, and two short trainings from the same seed, with and without clipping.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from cellstate.diagnostics.gradient_flow import GradientFlow, gradient_flow
from cellstate.diagnostics.models import build_model
from cellstate.layers.rnn import RNN
from cellstate.training.config import ModelConfig, RunConfig, TaskConfig, TrainingConfig
from cellstate.training.trainer import Trainer


@torch.no_grad()
def scale_spectral_radius_(rnn: RNN, radius: float) -> RNN:
    """Scale every layer's W_hh so that its largest |eigenvalue| is ``radius``."""
    for layer in range(rnn.num_layers):
        w_hh = getattr(rnn, f"weight_hh_l{layer}")
        w_hh.mul_(radius / torch.linalg.eigvals(w_hh).abs().max().to(w_hh))
    return rnn


def exploding_flow(
    config: RunConfig, radius: float = 3.0, batch_size: int = 32, seed: int = 0
) -> GradientFlow:
    """The gradient flow of ``config``'s RNN at initialisation with W_hh scaled to ``radius``."""
    if config.model.kind != "rnn":
        raise ValueError(f"the exploding demo scales an RNN's W_hh; got model {config.model.kind}")
    model = build_model(config, seed)
    scale_spectral_radius_(model.recurrent, radius)
    task = config.task.build()
    return gradient_flow(model, task, task.batch(batch_size, torch.Generator().manual_seed(seed)))


def growth_per_step(ratios: Tensor) -> Tensor:
    """(K-1,): how much the gradient norm grows from one step back to the next, ratio[k]/[k-1]."""
    return ratios[1:] / ratios[:-1]


@dataclass(frozen=True)
class ClippingDemo:
    """Two trainings of one configuration from one seed, differing only in clipping.

    runs: {"clipped" | "unclipped": metrics.jsonl records}; results: the Results, as dicts.
    """

    config: RunConfig
    radius: float
    runs: dict[str, list[dict]]
    results: dict[str, dict]

    def to_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "radius": self.radius,
            "runs": self.runs,
            "results": self.results,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ClippingDemo:
        return cls(
            RunConfig.from_dict(data["config"]), data["radius"], data["runs"], data["results"]
        )


# An RNN whose W_hh starts at spectral radius 2, trained with plain SGD on the two-sequence
# problem at T = 50: the first updates meet gradients of norm 10-100, which unclipped SGD
# turns into steps that can throw the network into saturation.
CLIPPING_CONFIG = RunConfig(
    TaskConfig("two-sequence", 50),
    ModelConfig(kind="rnn"),
    TrainingConfig(
        optimizer="sgd",
        lr=0.1,
        clip=1.0,
        max_sequences=9600,
        eval_every=640,
        checkpoint_every=10**9,
        test_size=256,
    ),
)


def clipping_demo(config: RunConfig = CLIPPING_CONFIG, radius: float = 2.0) -> ClippingDemo:
    """Train ``config`` (an RNN, W_hh scaled to ``radius``) with its clip threshold and with
    none, from the same seed: same initial weights, same batches."""
    if config.training.clip <= 0:
        raise ValueError("the clipping demo needs a clip threshold > 0 in config.training.clip")
    runs, results = {}, {}
    unclipped = replace(config, training=replace(config.training, clip=0.0))
    for name, run_config in (("clipped", config), ("unclipped", unclipped)):
        with tempfile.TemporaryDirectory() as out:
            trainer = Trainer(run_config, out, progress=False)
            scale_spectral_radius_(trainer.model.recurrent, radius)
            result = trainer.run()
            if result is None:  # a signal stopped the training
                raise KeyboardInterrupt
            lines = (Path(out) / "metrics.jsonl").read_text().splitlines()
        runs[name] = [json.loads(line) for line in lines if line.strip()]
        results[name] = vars(result)
    return ClippingDemo(config, radius, runs, results)
