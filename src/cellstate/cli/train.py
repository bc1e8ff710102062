"""``cellstate train``: train an LSTM or a plain RNN on one long-time-lag task.

    cellstate train --task adding --length 100 --model lstm --out runs/a100
    cellstate train ... --out runs/a100 --resume          # continue after Ctrl-C or a crash
    torchrun --standalone --nproc_per_node=2 -m cellstate.cli.main train ...   # DDP

Writes DIR/config.json, DIR/metrics.jsonl, DIR/checkpoint.pt and DIR/result.json. Exit 0 whether
or not the task was solved, 2 on bad arguments, 128 + signal number when interrupted.
"""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import fields
from pathlib import Path

from cellstate.training.config import (
    BACKENDS,
    DTYPES,
    INITS,
    MODELS,
    OPTIMIZERS,
    OUTPUTS,
    ModelConfig,
    RunConfig,
    TaskConfig,
    TrainingConfig,
)
from cellstate.training.distributed import close_world, init_world
from cellstate.training.divergence import Diverged
from cellstate.training.run_dir import RUN_FILES, check_writable, start_fresh
from cellstate.training.trainer import Result, ResumeError, Trainer


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train an LSTM or RNN on a long-time-lag task",
        description="Train a model on one task until the paper's criterion holds or the "
        "budget is spent. Defaults are the measured ones (RESULTS.md).",
    )
    add_config_arguments(parser)
    parser.add_argument("--out", help="run directory (default runs/train-TASK-T-MODEL-sSEED)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its checkpoint"
    )
    parser.add_argument(
        "--force", action="store_true", help="replace a run already in --out instead of refusing"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _default(cls, name: str):
    return next(f.default for f in fields(cls) if f.name == name)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that make a RunConfig; their defaults are the config dataclasses' defaults."""
    m, t = ModelConfig, TrainingConfig
    parser.add_argument("--task", default=_default(TaskConfig, "name"), help="(cellstate tasks)")
    parser.add_argument("--length", type=int, help="T, the task's length parameter")
    parser.add_argument("--model", choices=MODELS, default=_default(m, "kind"))
    parser.add_argument("--hidden", type=int, default=_default(m, "hidden"))
    parser.add_argument("--init", choices=INITS, help="default: chrono (LSTM), default (RNN)")
    parser.add_argument("--t-max", type=float, help="chrono T_max (default: the task's lag)")
    parser.add_argument("--forget-bias", type=float, default=_default(m, "forget_bias"))
    parser.add_argument("--output", choices=OUTPUTS, default=_default(m, "output"))
    parser.add_argument("--dtype", choices=DTYPES, default=_default(m, "dtype"))
    parser.add_argument("--backend", choices=BACKENDS, default=_default(m, "backend"))
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=_default(t, "optimizer"))
    parser.add_argument("--lr", type=float, default=_default(t, "lr"))
    parser.add_argument("--momentum", type=float, default=_default(t, "momentum"))
    parser.add_argument("--batch-size", type=int, default=_default(t, "batch_size"))
    parser.add_argument(
        "--clip", type=float, default=_default(t, "clip"), help="gradient-norm threshold; 0: off"
    )
    parser.add_argument("--max-sequences", type=int, default=_default(t, "max_sequences"))
    parser.add_argument("--eval-every", type=int, default=_default(t, "eval_every"))
    parser.add_argument("--checkpoint-every", type=int, default=_default(t, "checkpoint_every"))
    parser.add_argument("--seed", type=int, default=_default(t, "seed"))
    parser.add_argument("--test-seed", type=int, default=_default(t, "test_seed"))
    parser.add_argument(
        "--test-size",
        type=int,
        default=_default(t, "test_size"),
        help="held-out sequences (default: the paper's, 256 for two-sequence and reber, else 2560)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default=_default(t, "device"))


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The RunConfig the flags describe (ValueError naming the bad field)."""
    return RunConfig(
        TaskConfig(args.task, args.length),
        ModelConfig(
            kind=args.model,
            hidden=args.hidden,
            init=args.init,
            t_max=args.t_max,
            forget_bias=args.forget_bias,
            output=args.output,
            dtype=args.dtype,
            backend=args.backend,
        ),
        TrainingConfig(
            optimizer=args.optimizer,
            lr=args.lr,
            momentum=args.momentum,
            batch_size=args.batch_size,
            clip=args.clip,
            max_sequences=args.max_sequences,
            eval_every=args.eval_every,
            checkpoint_every=args.checkpoint_every,
            seed=args.seed,
            test_seed=args.test_seed,
            test_size=args.test_size,
            device=args.device,
        ),
    )


def describe(result: Result) -> str:
    """One line: what happened, next to the paper's figure."""
    lag = "" if result.length is None else f" T={result.length}"
    outcome = "solved" if result.solved else f"not solved ({result.stopped})"
    paper = f" (paper {result.paper_sequences:,})" if result.paper_sequences else ""
    return (
        f"{result.task}{lag} {result.model}: {outcome} after {result.sequences:,} sequences"
        f"{paper}; test {result.wrong}/{result.test_size} wrong; {result.seconds:.1f} s"
    )


def _error(message: str) -> int:
    print(f"cellstate train: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ValueError as error:
        return _error(str(error))
    t = config.training
    out = Path(
        args.out
        or f"runs/train-{config.task.name}-{config.task.build().length or 'x'}-"
        f"{config.model.kind}-s{t.seed}"
    )
    existing = (out / "checkpoint.pt").is_file()
    if existing and not (args.resume or args.force):
        return _error(f"{out} already holds a run; pass --resume to continue it or --force")
    if args.resume and not existing:
        return _error(f"--resume: no checkpoint in {out}")
    try:
        check_writable(out)
    except ValueError as error:
        return _error(str(error))
    if not existing and any((out / name).exists() for name in RUN_FILES):
        print(f"cellstate train: {out} held a run stopped before its first checkpoint (nothing to "
              "resume); starting afresh", file=sys.stderr)  # fmt: skip
    world = init_world(t.device)
    try:
        if args.force and not args.resume and world.is_main:
            start_fresh(out, RUN_FILES)
        try:
            trainer = Trainer(config, out, resume=args.resume, progress=not args.quiet, world=world)
        except (ResumeError, ValueError) as error:
            return _error(str(error))
        try:
            result = trainer.run()
        except (Diverged, OSError) as error:  # a NaN loss, a full disk: one line, not a trace
            return _error(str(error))
        if result is None:
            return 128 + signal.Signals[trainer.stop_signal or "SIGINT"].value
        if world.is_main:
            print(describe(result))
            print(f"results in {out}")
        return 0
    finally:
        close_world(world)
