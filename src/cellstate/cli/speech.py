"""``cellstate speech``: connected-digit recognition with a bidirectional LSTM and CTC.

    cellstate speech data --out DIR [--utterances N] [--seed S]
    cellstate speech train --data DIR --out RUN [--max-minutes M] [--model lstm|rnn] [--seed S]
    cellstate speech transcribe --checkpoint RUN/checkpoint.pt FILE.wav ...

Bad input (no espeak-ng, a bad manifest or WAV file, a missing or foreign checkpoint,
non-positive sizes) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from cellstate.cli.errors import print_usage, usage_error
from cellstate.cli.flags import Flag, add_flags, add_step_run_flags, flag_values
from cellstate.speech.audio import AudioError
from cellstate.speech.synthesis import DEFAULT_UTTERANCES, EspeakMissing, synthesise
from cellstate.speech.train import (
    DEFAULT_FORGET_BIAS,
    DEFAULT_MAX_MINUTES,
    SpeechTrainConfig,
    build_model,
    load_data,
    load_speech_checkpoint,
    prepare,
)
from cellstate.speech.train import train as run_training
from cellstate.speech.transcribe import transcribe_file
from cellstate.training.divergence import Diverged

# Every default is SpeechTrainConfig's, shown in the help.
TRAIN_FLAGS = (
    Flag("data", "corpus folder holding train.csv and test.csv"),
    Flag("out", "run directory"),
    Flag("model", "lstm, or rnn: the same network with a plain tanh RNN"),
    Flag("hidden", "hidden size H per direction"),
    Flag("layers", "bidirectional layers"),
    Flag("stack", "feature frames concatenated into one step"),
    Flag("dropout", "dropout between layers and before the output layer"),
    Flag(
        "forget_bias",
        "LSTM forget-gate bias offset at init",
        shown=f"{DEFAULT_FORGET_BIAS['lstm']}",
    ),
    Flag("layer_norm", "LSTM layer norm (true/false)"),
    Flag("zoneout", "LSTM zoneout probability"),
    Flag("spec_augment", "SpecAugment-style masking (true/false)"),
    Flag("batch", "utterances per step"),
    Flag("lr", "Adam learning rate"),
    Flag("clip", "gradient-norm clipping threshold"),
    Flag("seed", "random seed (weights, batches, masks)"),
    Flag("max_steps", "stop after this many steps in all", shown="no limit"),
    Flag(
        "max_minutes",
        "stop after this much training time in all",
        shown=f"{DEFAULT_MAX_MINUTES:g} unless --max-steps is given",
    ),
    Flag("eval_every", "steps between evaluations on the test voices"),
    Flag("checkpoint_every", "steps between checkpoints"),
    Flag("device", "cpu, or cuda when available"),
    Flag("threads", "torch CPU threads", shown="torch's, all cores"),
)


def register(subparsers) -> None:
    parser = subparsers.add_parser("speech", help="connected-digit speech recognition (CTC)")
    commands = parser.add_subparsers(dest="speech_command", metavar="{data,train,transcribe}")
    parser.set_defaults(func=lambda args: print_usage(parser))

    data = commands.add_parser(
        "data",
        help="synthesise a digit corpus with espeak-ng",
        description="Synthesise random digit strings with espeak-ng voices; write DIR/train.csv, "
        "DIR/test.csv (test voices never in training), DIR/wav/ and DIR/data.json.",
    )
    data.add_argument("--out", required=True, help="corpus folder")
    data.add_argument("--utterances", type=int, default=DEFAULT_UTTERANCES, help="in all")
    data.add_argument("--seed", type=int, default=0, help="the same seed, the same corpus")
    data.add_argument("--no-progress", action="store_true", help="no progress bar")
    data.set_defaults(func=run_data)

    train = commands.add_parser(
        "train",
        help="train a bidirectional LSTM (or RNN) with CTC",
        description="Train on DATA/train.csv, evaluate on DATA/test.csv. Writes RUN/config.json, "
        "RUN/checkpoint.pt (on SIGINT/SIGTERM too), RUN/metrics.jsonl and RUN/result.json.",
    )
    # SUPPRESS: an option left out is absent, so --resume can tell it from one given.
    add_flags(train, SpeechTrainConfig, TRAIN_FLAGS, given_only=True)
    add_step_run_flags(train, "RUN")
    train.set_defaults(func=run_train)

    transcribe = commands.add_parser(
        "transcribe", help="print the words heard in WAV files", description=__doc__
    )
    transcribe.add_argument("--checkpoint", required=True, help="RUN/checkpoint.pt")
    transcribe.add_argument("files", nargs="+", metavar="FILE.wav", help="WAV files to transcribe")
    transcribe.set_defaults(func=run_transcribe)


def run_data(args) -> int:
    try:
        info = synthesise(
            args.out, args.utterances, args.seed, progress=False if args.no_progress else None
        )
    except (EspeakMissing, ValueError, OSError) as error:
        return usage_error("speech data", error)
    print(
        f"wrote {info['train']} training and {info['test']} test utterances to {args.out} "
        f"in {info['seconds']:.1f} s; test voices: {', '.join(info['test_variants'])}"
    )
    return 0


def run_train(args) -> int:
    overrides = flag_values(args, TRAIN_FLAGS)
    if "data" in overrides:  # absolute, so that --resume finds it from anywhere
        overrides["data"] = str(Path(overrides["data"]).absolute())
    progress = False if args.no_progress else None
    try:
        config, resume_from = prepare(overrides, resume=args.resume)
        data = load_data(config, resume_from, progress)
    except (ValueError, OSError) as error:  # ManifestError and AudioError are ValueErrors
        return usage_error("speech train", error)
    try:
        result = run_training(config, data, resume_from, progress)
    except (Diverged, OSError) as error:  # a NaN loss, a full disk: one line
        return usage_error("speech train", error)
    if "interrupted" in result:
        print(
            f"stopped by {result['interrupted']} at step {result['steps']}; "
            f"continue with: cellstate speech train --out {config.out} --resume",
            file=sys.stderr,
        )
        return 128 + signal.Signals[result["interrupted"]].value
    print(
        f"step {result['steps']} ({result['seconds']:.0f} s, stopped by {result['stopped_by']}): "
        f"WER {result['wer']:.2%} on the test voices, {result['wer_noisy']:.2%} at "
        f"{result['noisy_snr_db']:g} dB SNR; wrote {config.out}/result.json"
    )
    return 0


def run_transcribe(args) -> int:
    try:
        model, vocab, features = build_model(load_speech_checkpoint(args.checkpoint))
    except (ValueError, OSError) as error:
        return usage_error("speech transcribe", error)
    status = 0
    for path in args.files:
        try:
            print(f"{path}\t{transcribe_file(model, vocab, features, path)}", flush=True)
        except (AudioError, OSError) as error:
            status = usage_error("speech transcribe", error)
    return status
