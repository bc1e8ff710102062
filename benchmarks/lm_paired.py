"""Character language model, step-matched and paired: the same model on cellstate.LSTM and on
torch.nn.LSTM, trained for the same number of steps from the same seed on the same batches,
for several seeds; validation bits per character of each pair and their difference.

Unlike benchmarks/lm.py (a training-time budget, where the faster kernel sees more text), this
asks whether the two LSTMs learn alike step for step: same initial weights (the same seed draws
the same weights for both), same batches (the text's streams in order), no dropout, so that the
kernel is the only difference. Each run is ``cellstate lm train``'s loop (lm/train.py), one
after the other in this process; when the command is run again a finished run (its
result.json) is reused and an interrupted one resumed exactly from its checkpoint. Prints a
markdown table and writes it, with the raw numbers, under --out::

    .venv/bin/python benchmarks/lm_paired.py --hidden 128 --steps 2000 --seeds 0 1 2 \\
        --out runs/lm-paired
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
from pathlib import Path

import torch
from lm import MODELS, add_model_arguments  # benchmarks/lm.py, beside this file

from cellstate.lm.train import (
    RESUMABLE,
    Data,
    LMTrainConfig,
    bits_per_char,
    build_model,
    load_data,
    load_lm_checkpoint,
)
from cellstate.lm.train import train as run_training
from cellstate.training import run_dir
from cellstate.training.step_trainer import resumed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="training steps per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one pair each")
    parser.add_argument("--out", default="runs/lm-paired", help="directory for runs and table")
    add_model_arguments(parser, hidden=128)  # --models: two processes may share the work
    return parser.parse_args(argv)


def config_for(args: argparse.Namespace, model: str, seed: int, out: Path) -> LMTrainConfig:
    return LMTrainConfig(
        out=str(out),
        model=model,
        seed=seed,
        max_steps=args.steps,
        hidden=args.hidden,
        layers=args.layers,
        seq_len=args.seq_len,
        batch=args.batch,
        lr=args.lr,
        eval_every=args.eval_every,
        eval_chars=args.eval_chars,
        checkpoint_every=args.eval_every,
    )


def run_pair(args: argparse.Namespace, seed: int, out: Path, data: Data) -> dict[str, dict]:
    """Train both models from ``seed`` (or reuse finished runs, or continue interrupted ones);
    each one's result, with its validation curve and its bpc over the whole validation split."""
    pair = {}
    for model in args.models:
        run = run_dir.RunDir(out / f"seed{seed}" / model)
        config = config_for(args, model, seed, run.path)
        finished = run_dir.read_json(run.result)
        if finished is None or finished["steps"] != args.steps:
            resume = run.checkpoint.is_file()
            resume_from = load_lm_checkpoint(run.checkpoint) if resume else None
            if resume_from is not None:  # only --steps may differ (RESUMABLE: the resume is exact)
                stored = LMTrainConfig(**resume_from["train_config"])
                config = resumed(stored, {"max_steps": args.steps}, RESUMABLE)
                if config != config_for(args, model, seed, run.path):
                    raise SystemExit(f"{run.path} holds a run of other settings; use another --out")
            result = run_training(config, data, resume_from, progress=False)
            if "interrupted" in result:
                raise SystemExit(f"interrupted in {run.path}; the same command continues it")
        result = run_dir.read_json(run.result)
        result["curve"] = [(m["step"], m["val_bpc"]) for m in run.read_metrics()]
        result["val_bpc_full"] = full_validation_bpc(run, data)
        pair[model] = result
    return pair


def full_validation_bpc(run: run_dir.RunDir, data: Data) -> float:
    """The final model's bpc over the whole validation split (kept in the run directory, so
    that a rerun that tabulates does not score the same model again)."""
    path, state = run.path / "val_bpc_full.json", load_lm_checkpoint(run.checkpoint)
    kept = run_dir.read_json(path)
    if kept is None or kept["step"] != state["step"]:
        model, _ = build_model(state)
        config = state["train_config"]
        bpc = bits_per_char(model, data.val_ids, config["batch"], config["seq_len"])
        run_dir.write_json(path, {"val_bpc_full": bpc, "step": state["step"]})
    return run_dir.read_json(path)["val_bpc_full"]


def summary(differences: list[float]) -> dict:
    """Mean, sample standard deviation, smallest and largest of the per-seed differences."""
    return {
        "mean": statistics.fmean(differences),
        "stdev": statistics.stdev(differences) if len(differences) > 1 else None,
        "min": min(differences),
        "max": max(differences),
    }


def table(pairs: dict[int, dict[str, dict]]) -> tuple[str, dict]:
    lines = [
        "| seed | cellstate.LSTM val bpc | torch.nn.LSTM val bpc | cellstate - torch "
        "| whole split: cellstate | torch | cellstate - torch |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    diff, diff_full = [], []
    for seed, pair in pairs.items():
        ours, theirs = pair["cellstate"], pair["torch"]
        diff.append(ours["val_bpc"] - theirs["val_bpc"])
        diff_full.append(ours["val_bpc_full"] - theirs["val_bpc_full"])
        lines.append(
            f"| {seed} | {ours['val_bpc']:.4f} | {theirs['val_bpc']:.4f} | {diff[-1]:+.4f} "
            f"| {ours['val_bpc_full']:.4f} | {theirs['val_bpc_full']:.4f} | {diff_full[-1]:+.4f} |"
        )
    stats = {"sampled": summary(diff), "whole_split": summary(diff_full)}
    for name, s in stats.items():
        spread = "" if s["stdev"] is None else f", sample sd {s['stdev']:.4f}"
        lines.append(
            f"\n{name}: mean difference {s['mean']:+.4f}{spread}, "
            f"range {s['min']:+.4f} to {s['max']:+.4f}"
        )
    return "\n".join(lines), stats


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    command = "python benchmarks/lm_paired.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    load_before = os.getloadavg()
    data = load_data(config_for(args, "torch", 0, out))  # the same text for every run
    pairs = {seed: run_pair(args, seed, out, data) for seed in args.seeds}
    load_after = os.getloadavg()
    if set(args.models) != set(MODELS):
        print(f"trained {' and '.join(args.models)}; run again with both models to tabulate")
        return 0
    text, stats = table(pairs)
    print(text)
    print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}")
    (out / "table.md").write_text(text + "\n")
    run_dir.write_json(
        out / "results.json",
        {
            "command": command,
            "args": vars(args),
            "threads": torch.get_num_threads(),
            "load_average": {"before": load_before, "after": load_after},
            "differences": stats,
            "pairs": pairs,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
