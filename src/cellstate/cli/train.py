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
from pathlib import Path

from cellstate.cli.errors import usage_error
from cellstate.cli.flags import Flag, add_flags, flag_values
from cellstate.training.config import (
    BACKENDS,
    DEFAULT_ADAM_BETA2,
    DEFAULT_BATCH_SIZE,
    DEFAULT_HIDDEN,
    DEFAULT_INPUT_GATE_BOUND,
    DEFAULT_LR,
    DEFAULT_LR_DECAY,
    DEFAULT_TEST_SIZE,
    DEVICES,
    INITS,
    MODEL_DTYPES,
    MODEL_KINDS,
    OPTIMIZERS,
    OUTPUTS,
    TASK_DEFAULTS,
    ModelConfig,
    RunConfig,
    TaskConfig,
    TrainingConfig,
)
from cellstate.training.distributed import World, close_world, exit_rank, init_world
from cellstate.training.divergence import Diverged
from cellstate.training.run_dir import RUN_FILES, check_writable, start_fresh
from cellstate.training.trainer import Result, ResumeError, Trainer


def _with_task_defaults(field: str, general: float) -> str:
    """A default that some tasks change (TASK_DEFAULTS), as --help shows it."""
    special = [f"{task} {value[field]}" for task, value in TASK_DEFAULTS.items() if field in value]
    return ", ".join([str(general), *special])


TASK_FLAGS = (
    Flag("name", "the task (cellstate tasks lists them)", name="--task"),
    Flag("length", "T, the task's length parameter", shown="the task's"),
    Flag(
        "n_informative",
        "N, the informative inputs that open a two-sequence sequence",
        name="--informative",
        shown="3 for the two-sequence tasks, which alone take it",
    ),
)
MODEL_FLAGS = (
    Flag("kind", "lstm, or rnn: a plain tanh RNN", name="--model", choices=MODEL_KINDS),
    Flag("hidden", "hidden size H", shown=_with_task_defaults("hidden", DEFAULT_HIDDEN)),
    Flag("init", "weight initialisation", choices=INITS, shown="chrono (LSTM), default (RNN)"),
    Flag("t_max", "chrono initialisation's T_max", shown="the task's longest lag"),
    Flag("forget_bias", "LSTM forget-gate bias at init (not with chrono, which sets it)"),
    Flag(
        "input_gate_bound",
        "LSTM input gate's input weights ~ U(-bound, bound) at init",
        shown=f"{DEFAULT_INPUT_GATE_BOUND:g} with chrono, else torch's 1/sqrt(H)",
    ),
    Flag(
        "output",
        "the head: sigmoid, linear, or auto (the task's default: linear for long-lag and "
        "cross-entropy tasks, else sigmoid)",
        choices=OUTPUTS,
    ),
    Flag(
        "input_to_output",
        "add a linear map of each step's input to the head (the 1997 nets' wiring)",
        shown=_with_task_defaults("input_to_output", False),
    ),
    Flag(
        "zero_head",
        "the head's weights from the hidden state start at zero",
        shown=_with_task_defaults("zero_head", False),
    ),
    Flag("dtype", "of the model's weights and inputs", choices=MODEL_DTYPES),
    Flag(
        "backend",
        "the layer's backend (auto: the CPU kernel where it can run, else the reference)",
        choices=BACKENDS,
    ),
)
TRAINING_FLAGS = (
    Flag("optimizer", "the optimizer", choices=OPTIMIZERS),
    Flag("lr", "learning rate", shown=_with_task_defaults("lr", DEFAULT_LR)),
    Flag(
        "lr_decay",
        "reduce-on-plateau: multiply the lr by this after --lr-patience evaluations without a 1% "
        "fall of the test loss, once learning has begun (the test loss 10% below the first "
        "evaluation's, and below half the task's memoryless loss where it has one); 1: constant lr",
        shown=_with_task_defaults("lr_decay", DEFAULT_LR_DECAY),
    ),
    Flag("lr_patience", "evaluations without progress before the lr is cut (see --lr-decay)"),
    Flag(
        "lr_min",
        "the floor of --lr-decay's cuts, where they end",
        shown="lr * lr_decay**2, two cuts",
    ),
    Flag("momentum", "SGD momentum (optimizer sgd only)"),
    Flag(
        "adam_beta2",
        "Adam's second-moment decay (optimizer adam only)",
        shown=_with_task_defaults("adam_beta2", DEFAULT_ADAM_BETA2),
    ),
    Flag(
        "batch_size",
        "sequences per update",
        shown=_with_task_defaults("batch_size", DEFAULT_BATCH_SIZE),
    ),
    Flag("clip", "gradient-norm threshold; 0: off"),
    Flag("max_sequences", "the budget: training sequences in all"),
    Flag(
        "eval_every",
        "training sequences between evaluations on the held-out set",
        shown="1000 where the criterion is decided on the test set (reber, two-sequence), "
        "else 10000",
    ),
    Flag("checkpoint_every", "training sequences between checkpoints"),
    Flag("seed", "random seed of the weights and training batches"),
    Flag("test_seed", "random seed of the held-out test set"),
    Flag(
        "test_size",
        "held-out sequences",
        shown=f"the paper's, 256 for two-sequence and reber, else {DEFAULT_TEST_SIZE}",
    ),
    Flag("device", "cpu, or cuda (with torchrun: one GPU per process)", choices=DEVICES),
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train an LSTM or RNN on a long-time-lag task",
        description="Train a model on one task until the paper's criterion holds or the "
        "budget is spent. Defaults are the measured ones (RESULTS.md).",
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--out",
        help="run directory (default runs/train-TASK-T-MODEL-sSEED; -nN after T for an "
        "--informative N other than the task's default)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its checkpoint"
    )
    parser.add_argument(
        "--force", action="store_true", help="replace a run already in --out instead of refusing"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that make a RunConfig; their defaults are the config dataclasses' defaults."""
    add_flags(parser, TaskConfig, TASK_FLAGS)
    add_flags(parser, ModelConfig, MODEL_FLAGS)
    add_flags(parser, TrainingConfig, TRAINING_FLAGS)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The RunConfig the flags describe (ValueError naming the bad field)."""
    return RunConfig(
        TaskConfig(**flag_values(args, TASK_FLAGS)),
        ModelConfig(**flag_values(args, MODEL_FLAGS)),
        TrainingConfig(**flag_values(args, TRAINING_FLAGS)),
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


def default_run_dir(config: RunConfig) -> str:
    """runs/train-TASK-T[-nN]-MODEL-sSEED; N only where it is not the task's default, so that
    two-sequence runs with N = 1 and N = 3 do not share a folder (nor a default run its old one)."""
    task = config.task.build()
    n = getattr(task, "n_informative", None)
    n_part = f"-n{n}" if n is not None and n != type(task).default_informative else ""
    return (
        f"runs/train-{task.name}-{task.length}{n_part}-{config.model.kind}-s{config.training.seed}"
    )


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ValueError as error:
        return usage_error("train", error)
    t = config.training
    out = Path(args.out or default_run_dir(config))
    existing = (out / "checkpoint.pt").is_file()
    if existing and not (args.resume or args.force):
        return usage_error(
            "train", f"{out} already holds a run; pass --resume to continue it or --force"
        )
    if args.resume and not existing:
        return usage_error("train", f"--resume: no checkpoint in {out}")
    try:
        check_writable(out)
    except ValueError as error:
        return usage_error("train", error)
    if not existing and any((out / name).exists() for name in RUN_FILES):
        print(f"cellstate train: {out} held a run stopped before its first checkpoint (nothing to "
              "resume); starting afresh", file=sys.stderr)  # fmt: skip
    world = init_world(t.device)
    try:
        code = _train(config, out, args, world)
    finally:
        close_world(world)
    if world.distributed:
        exit_rank(code)
    return code


def _train(config: RunConfig, out: Path, args: argparse.Namespace, world: World) -> int:
    """Train in `out` as this rank of `world`: the exit code."""
    if args.force and not args.resume and world.is_main:
        start_fresh(out, RUN_FILES)
    try:
        trainer = Trainer(config, out, resume=args.resume, progress=not args.quiet, world=world)
    except (ResumeError, ValueError) as error:
        return usage_error("train", error)
    try:
        result = trainer.run()
    except (Diverged, OSError) as error:  # a NaN loss, a full disk: one line, not a trace
        return usage_error("train", error)
    if result is None:
        return 128 + signal.Signals[trainer.stop_signal or "SIGINT"].value
    if world.is_main:
        print(describe(result))
        print(f"results in {out}")
    return 0
