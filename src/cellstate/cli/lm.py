"""``cellstate lm``: train a character-level LSTM language model and sample from it.

    cellstate lm train [--text PATH ...] [--hidden H] [--layers L] [--seq-len T] [--batch B]
                       [--max-steps N] [--max-minutes M] [--out DIR] [--resume] ...
    cellstate lm sample --checkpoint PATH [--prompt TEXT] [--length N] [--temperature X]

Bad input (missing, empty or binary text, an unknown prompt character, a missing or foreign
checkpoint, non-positive sizes) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from cellstate.cli.errors import print_usage, usage_error
from cellstate.cli.flags import Flag, add_flags, add_step_run_flags, flag_values
from cellstate.lm.corpus import DEFAULT_MAX_CHARS
from cellstate.lm.sample import SampleConfig, sample, start_text
from cellstate.lm.train import (
    DEFAULT_MAX_STEPS,
    LMTrainConfig,
    build_model,
    load_data,
    load_lm_checkpoint,
    prepare,
)
from cellstate.lm.train import train as run_training
from cellstate.training.divergence import Diverged
from cellstate.training.run_dir import RunDirError

# Every default is LMTrainConfig's, shown in the help.
TRAIN_FLAGS = (
    Flag("out", "run directory"),
    Flag("hidden", "LSTM hidden size H"),
    Flag("layers", "LSTM layers"),
    Flag("embed", "character embedding size"),
    Flag("dropout", "dropout on the embedding, between layers, before the head"),
    Flag("model", "cellstate, or torch: the same model on torch.nn.LSTM"),
    Flag("seq_len", "BPTT chunk length T (the state carries across chunks)"),
    Flag("batch", "parallel text streams B"),
    Flag("lr", "Adam learning rate"),
    Flag("clip", "gradient-norm clipping threshold"),
    Flag("seed", "random seed (weights, dropout)"),
    Flag(
        "max_steps",
        "stop after this many steps in all",
        shown=f"{DEFAULT_MAX_STEPS} unless --max-minutes is given",
    ),
    Flag("max_minutes", "stop after this much training time in all", shown="no limit"),
    Flag("eval_every", "steps between validation runs"),
    Flag("eval_chars", "validation characters scored, spread over the split"),
    Flag("checkpoint_every", "steps between checkpoints"),
    Flag("max_chars", "cut the corpus at this many characters"),
    Flag("device", "cpu or cuda[:N]: where the model and its batches run"),
)


def register(subparsers) -> None:
    parser = subparsers.add_parser("lm", help="character-level LSTM language model")
    commands = parser.add_subparsers(dest="lm_command", metavar="{train,sample}")
    parser.set_defaults(func=lambda args: print_usage(parser))

    train = commands.add_parser(
        "train",
        help="train on text files (default: the Python standard library's sources)",
        description="Train a character-level LSTM language model. Writes DIR/config.json, "
        "DIR/checkpoint.pt (on SIGINT/SIGTERM too), DIR/metrics.jsonl and DIR/result.json.",
    )
    # SUPPRESS: an option left out is absent, so --resume can tell it from one given.
    train.add_argument(
        "--text",
        dest="texts",
        nargs="+",
        action="extend",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="UTF-8 text files, concatenated (default: the standard library's .py sources, "
        f"at most {DEFAULT_MAX_CHARS:,} characters)",
    )
    add_flags(train, LMTrainConfig, TRAIN_FLAGS, given_only=True)
    add_step_run_flags(train, "DIR")
    train.set_defaults(func=run_train)

    sample_parser = commands.add_parser(
        "sample", help="continue a prompt", description="Print the prompt and its continuation."
    )
    sample_parser.add_argument("--checkpoint", required=True, help="DIR/checkpoint.pt of a run")
    sample_parser.add_argument("--prompt", help="text to continue (default: a new line)")
    sample_parser.add_argument("--length", type=int, default=500, help="characters to write")
    sample_parser.add_argument("--temperature", type=float, default=1.0, help="> 0; lower: safer")
    sample_parser.add_argument("--seed", type=int, default=0, help="the same seed, the same text")
    sample_parser.set_defaults(func=run_sample)


def run_train(args) -> int:
    overrides = flag_values(args, TRAIN_FLAGS)
    if "texts" in args:  # absolute, so that --resume finds them from anywhere
        overrides["texts"] = tuple(str(Path(path).absolute()) for path in args.texts)
    try:
        config, resume_from = prepare(overrides, resume=args.resume)
        data = load_data(config, resume_from)
    except (ValueError, OSError) as error:  # CorpusError is a ValueError
        return usage_error("lm train", error)
    progress = False if args.no_progress else None
    try:
        result = run_training(config, data, resume_from, progress=progress)
    except (Diverged, RunDirError, OSError) as error:  # a NaN loss, a full disk: one line
        return usage_error("lm train", error)
    if "interrupted" in result:
        print(
            f"stopped by {result['interrupted']} at step {result['steps']}; "
            f"continue with: cellstate lm train --out {config.out} --resume",
            file=sys.stderr,
        )
        return 128 + signal.Signals[result["interrupted"]].value
    print(
        f"step {result['steps']}: validation {result['val_bpc']:.4f} bits/char, "
        f"{result['chars_per_second']:,.0f} chars/s; wrote {config.out}/result.json"
    )
    return 0


def run_sample(args) -> int:
    try:
        config = SampleConfig(args.prompt, args.length, args.temperature, args.seed)
        model, vocab = build_model(load_lm_checkpoint(args.checkpoint))
        start_text(vocab, config.prompt)
    except (ValueError, OSError) as error:  # FileNotFoundError is an OSError
        return usage_error("lm sample", error)
    text = sample(model, vocab, config)
    print((config.prompt or "") + text)
    return 0
