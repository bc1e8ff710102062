"""The training loop that ``lm train`` and ``speech train`` share: optimiser steps until a step
count or a training-time budget, an evaluation and a checkpoint every so many steps, a
SIGINT/SIGTERM that stops after the current step with a checkpoint to resume from, and the run
directory kept as training/run_dir.py says.

A trainer subclasses StepTrainer and says what its loss on the next batch, its evaluation, its
checkpoint entries and its result are; StepTrainer owns the model, the optimiser update (clip,
step), the counters (steps, training seconds, the loss since the last evaluation) and the files.
Training time excludes evaluations and checkpoint writes, so that budgets compare models fairly.

The config of a run is a frozen dataclass with at least ``out``, ``device``, ``clip``,
``max_steps``, ``max_minutes``, ``eval_every`` and ``checkpoint_every``.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn
from tqdm import tqdm

import cellstate
from cellstate.kernels import dispatch
from cellstate.training import checkpoint, run_dir
from cellstate.training.divergence import check_loss
from cellstate.training.interrupt import GracefulStop


def torch_device(name: str) -> torch.device:
    """``name`` ("cpu", "cuda" or "cuda:N") as a torch.device; ValueError if it is none of
    those or torch sees no CUDA device."""
    if name != "cpu" and name != "cuda" and not name.startswith("cuda:"):
        raise ValueError(f"--device must be cpu or cuda[:N]; got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"--device {name}: torch {torch.__version__} sees no CUDA device; use --device cpu"
        )
    return torch.device(name)


def resumed(stored, overrides: dict, resumable: frozenset[str]):
    """The ``stored`` config (a checkpoint's) with ``overrides`` applied; ValueError if one
    outside ``resumable`` would change it (and with it the numbers)."""
    for name, value in overrides.items():
        current = getattr(stored, name)
        if name not in resumable and value != current:
            raise ValueError(
                f"--resume: {name} is {current!r} in the checkpoint, not {value!r} "
                "(only where and when to stop, evaluate and save may change)"
            )
    return dataclasses.replace(stored, **overrides)


def prepare(
    config_type: type,
    overrides: dict,
    resume: bool,
    resumable: frozenset[str],
    load: Callable[[str], dict],
):
    """The config to run (``config_type``'s defaults <- ``overrides``) and the checkpoint to
    resume from (None: a fresh run), read by ``load``.

    With ``resume`` the checkpoint's config replaces the defaults, and an override outside
    ``resumable`` that would change it is an error. Without it, an existing checkpoint in
    ``out`` is an error, not overwritten. ValueError too for a device torch cannot use.
    """
    run = run_dir.RunDir(overrides.get("out", config_type.out))
    if not resume:
        if run.checkpoint.exists():
            raise ValueError(
                f"{run.checkpoint} exists; pass --resume to continue it or choose another --out"
            )
        run_dir.check_writable(run.path)
        config, state = config_type(**overrides), None
    else:
        state = load(run.checkpoint)
        stored = config_type(**state["train_config"])
        config = resumed(stored, {**overrides, "out": str(run.path)}, resumable)
    torch_device(config.device)
    return config, state


def environment() -> dict:
    """What config.json records of the software a run ran on."""
    return {
        "versions": {
            "cellstate": cellstate.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "threads": torch.get_num_threads(),
        "backends": dispatch.backend_status(),
    }


class StepTrainer:
    """Trains ``model`` with ``optimizer`` as ``config`` says; ``run()`` returns the result.

    Subclasses set their own state first (the model, the optimiser and any random generator),
    then call ``super().__init__``, which continues ``resume_from`` (a checkpoint) if given and
    otherwise clears the run directory for a fresh start.
    """

    kind: str  # the checkpoint's "kind", e.g. "cellstate-lm"
    divergence_advice: str  # what to try when the loss turns NaN or infinite

    def __init__(
        self, config, model: nn.Module, optimizer: torch.optim.Optimizer, resume_from: dict | None
    ) -> None:
        self.config = config
        self.run_dir = run_dir.RunDir(config.out)
        self.model = model
        self.optimizer = optimizer
        self.step = 0
        self.seconds = 0.0  # training time
        self.window = [0.0, 0]  # loss sum and steps since the last evaluation
        self.last_eval: dict | None = None
        self.backends: list[str] = []  # what the checkpoint's steps ran on, in order
        self.devices: list[str] = []  # and on which device
        self.budget = config.max_minutes * 60 if config.max_minutes is not None else math.inf
        if resume_from is not None:
            self._resume(resume_from)
        else:  # an earlier run's metrics or result must not mix with this run's
            self.run_dir.start_fresh()

    # ---------------------------------------------------------------- what a subclass says

    def describe(self) -> dict:
        """config.json's entries besides environment()'s; may print a summary line."""
        raise NotImplementedError

    def warm_up(self) -> str:
        """Build (or load) the recurrent kernel without drawing random numbers (so that an exact
        resume stays exact); return the backend the steps run on."""
        raise NotImplementedError

    def loss(self) -> Tensor:
        """The scalar loss on the next training batch (the model in training mode)."""
        raise NotImplementedError

    def evaluate(self) -> dict:
        """This step's metrics line (metrics.jsonl); it should say ``step``."""
        raise NotImplementedError

    def announce(self, record: dict) -> str:
        """The line printed for an evaluation."""
        raise NotImplementedError

    def postfix(self, loss: float) -> dict:
        """The progress bar's figures after a step with this loss."""
        raise NotImplementedError

    def checkpoint_entries(self) -> dict:
        """What the checkpoint holds besides the model, optimiser, counters and RNG states."""
        raise NotImplementedError

    def generators(self) -> dict[str, torch.Generator]:
        """Named random generators that the checkpoint saves and a resume restores."""
        return {}

    def result(self, last: dict) -> dict:
        """result.json, given the last evaluation (at the final step)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- the loop

    def run(self, progress: bool | None = None) -> dict:
        """Train (or continue) to the step or time limit and return the result (also written
        to result.json). A SIGINT/SIGTERM stops it after the current step with a checkpoint to
        resume from; the result is then ``{"interrupted": signal name, "steps": ...}`` and
        result.json is not written. ``progress``: a tqdm bar (None: only on a terminal)."""
        self.run_dir.write_json(self.run_dir.config, {**self.describe(), **environment()})
        self.backends = checkpoint.continue_backends(self.backends, self.warm_up())
        self.devices = checkpoint.continue_backends(self.devices, self.config.device, "device")
        bar = tqdm(
            total=self.config.max_steps,
            initial=self.step,
            unit="step",
            disable=None if progress is None else not progress,
            dynamic_ncols=True,
        )
        with GracefulStop() as stop, bar:
            while not self._done() and not stop.requested:
                self._train_step(bar)
                if self.step % self.config.eval_every == 0:
                    self._evaluate_and_log()
                if self.step % self.config.checkpoint_every == 0:
                    self.save()
            self.save()
        if stop.requested:
            return {"interrupted": stop.signal_name, "steps": self.step}
        if self.last_eval is None or self.last_eval["step"] != self.step:
            self._evaluate_and_log()
        result = self.result(self.last_eval)
        self.run_dir.write_json(self.run_dir.result, result)
        return result

    def _done(self) -> bool:
        max_steps = self.config.max_steps
        return (max_steps is not None and self.step >= max_steps) or self.seconds >= self.budget

    def _train_step(self, bar: tqdm) -> None:
        """One optimiser step: loss, a check that it is finite, backward, clip, update."""
        start = time.perf_counter()
        loss = self.loss()
        value = loss.item()
        check_loss(value, f"step {self.step + 1}", self.run_dir.checkpoint, self.divergence_advice)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip)
        self.optimizer.step()
        self.seconds += time.perf_counter() - start
        self.step += 1
        self.window[0] += value
        self.window[1] += 1
        bar.update(1)
        bar.set_postfix(**self.postfix(value), refresh=False)

    def _evaluate_and_log(self) -> None:
        self.last_eval = self.evaluate()
        self.run_dir.append_metrics(self.last_eval)
        self.window = [0.0, 0]
        tqdm.write(self.announce(self.last_eval))

    # ---------------------------------------------------------------- checkpoints

    def save(self) -> None:
        """Write the checkpoint (atomically)."""
        state = {
            "kind": self.kind,
            "train_config": dataclasses.asdict(self.config),
            **self.checkpoint_entries(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "seconds": self.seconds,
            "window": self.window,
            "rng": checkpoint.rng_state(self.generators()),
            "backends": self.backends,
            "devices": self.devices,
        }
        checkpoint.save_atomic(state, self.run_dir.checkpoint)

    def _resume(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.seconds, self.window = state["step"], state["seconds"], state["window"]
        self.backends = state.get("backends", [])
        self.devices = state.get("devices", [])
        checkpoint.restore_rng_state(state["rng"], self.generators())
        # Metrics a crash logged between the checkpoint and itself: the resume logs them again.
        self.run_dir.truncate_metrics(lambda record: record.get("step", 0) <= self.step)
