"""Character language model: validation bits per character after a fixed training-time budget,
the same model on cellstate.LSTM and on torch.nn.LSTM.

Both run ``cellstate lm train`` with the same seed, text, sizes and budget (training time;
evaluations and checkpoints are not counted). A faster kernel sees more text in the budget,
which shows up as a lower bpc. The runs take turns, in --rounds slices of the budget resumed
exactly from their checkpoints, so that on a shared machine both meet the same background load;
each slice ends with a validation, which gives the bpc-per-minute curve. Prints a markdown table
and writes it, with the raw numbers, under --out::

    .venv/bin/python benchmarks/lm.py --minutes 10 --out runs/bench-lm
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

import cellstate
from cellstate.kernels import dispatch
from cellstate.lm.train import (
    LMTrainConfig,
    bits_per_char,
    build_model,
    load_data,
    load_lm_checkpoint,
)

MODELS = ("cellstate", "torch")


def add_model_arguments(parser: argparse.ArgumentParser, hidden: int) -> None:
    """The model, training and evaluation flags that this and benchmarks/lm_paired.py share."""
    parser.add_argument("--hidden", type=int, default=hidden)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--eval-chars", type=int, default=100_000)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per model")
    parser.add_argument("--rounds", type=int, default=10, help="turns the budget is cut in")
    parser.add_argument("--out", default="runs/bench-lm", help="directory for runs and table")
    parser.add_argument("--seed", type=int, default=0)
    add_model_arguments(parser, hidden=256)
    return parser.parse_args(argv)


def train_command(args: argparse.Namespace, model: str, out: Path, minutes: float) -> list[str]:
    return [
        *(sys.executable, "-m", "cellstate.cli.main", "lm", "train", "--no-progress"),
        *("--model", model, "--out", str(out), "--max-minutes", f"{minutes:.6g}"),
        *("--hidden", str(args.hidden), "--layers", str(args.layers)),
        *("--seq-len", str(args.seq_len), "--batch", str(args.batch), "--lr", str(args.lr)),
        *("--seed", str(args.seed), "--eval-every", str(args.eval_every)),
        *("--eval-chars", str(args.eval_chars), "--checkpoint-every", "1000000"),
    ]


def bpc_at(metrics: list[dict], seconds: float) -> float:
    """The validation bpc measured nearest to ``seconds`` of training time (a round ends
    less than a step past its share of the budget)."""
    return min(metrics, key=lambda m: abs(m["train_seconds"] - seconds))["val_bpc"]


def full_validation_bpc(run_dir: Path) -> tuple[float, int]:
    """A run's final bpc over its whole validation split, and the characters scored."""
    state = load_lm_checkpoint(run_dir / "checkpoint.pt")
    config = LMTrainConfig(**state["train_config"])
    model, _ = build_model(state)
    data = load_data(config, state)
    bpc = bits_per_char(model, data.val_ids, config.batch, config.seq_len)
    return bpc, len(data.val_ids) - 1


def run(args: argparse.Namespace, out: Path) -> dict[str, dict]:
    """Train every model, taking turns each round (the order reversed every other round)."""
    for model in args.models:
        if (out / model).exists():
            raise SystemExit(f"{out / model} exists; remove it or choose another --out")
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    wall = dict.fromkeys(args.models, 0.0)
    for r in range(1, args.rounds + 1):
        for model in args.models if r % 2 else args.models[::-1]:
            command = train_command(args, model, out / model, args.minutes * r / args.rounds)
            started = time.perf_counter()
            subprocess.run([*command, *(["--resume"] if r > 1 else [])], check=True, env=env)
            wall[model] += time.perf_counter() - started
    results = {}
    for model in args.models:
        result = json.loads((out / model / "result.json").read_text())
        lines = (out / model / "metrics.jsonl").read_text().splitlines()
        metrics = [json.loads(line) for line in lines]
        result["wall_seconds"] = wall[model]
        result["val_bpc_half_budget"] = bpc_at(metrics, args.minutes * 30)
        result["curve"] = [(m["train_seconds"], m["val_bpc"]) for m in metrics]
        result["val_bpc_full"], result["val_chars_full"] = full_validation_bpc(out / model)
        results[model] = result
    return results


def machine(args: argparse.Namespace) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": args.threads or torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cellstate": cellstate.__version__,
        "git_commit": commit or "unknown",
        "backends": dispatch.backend_status(),
        # Thread settings change CPU timings a lot on a shared machine; keep them with the numbers.
        "environment": {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "MKL_"))},
    }


def table(args: argparse.Namespace, results: dict[str, dict]) -> str:
    half = f"{args.minutes / 2:g} min"
    full = f"all {next(iter(results.values()))['val_chars_full']:,} validation chars"
    lines = [
        f"| model | steps | chars/s | val bpc at {half} | val bpc at {args.minutes:g} min "
        f"| at {args.minutes:g} min, {full} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for model, r in results.items():
        name = "cellstate.LSTM" if model == "cellstate" else "torch.nn.LSTM"
        lines.append(
            f"| {name} | {r['steps']:,} | {r['chars_per_second']:,.0f} | "
            f"{r['val_bpc_half_budget']:.3f} | {r['val_bpc']:.3f} | {r['val_bpc_full']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    command = "python benchmarks/lm.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    # Build (or load) the CPU kernel here, so that compiling it is not counted as training time;
    # and say which backend "auto" runs on a (T, B, E) float32 CPU input.
    x = torch.zeros(args.seq_len, args.batch, LMTrainConfig().embed)  # (T, B, E)
    auto = dispatch.select("auto", x).__name__
    about = {**machine(args), "auto_backend": auto}
    load_before = os.getloadavg()
    results = run(args, out)
    load_after = os.getloadavg()
    text = table(args, results)
    print(text)
    print(f"machine: {about['cpu']}, {about['cores']} cores, {about['torch_threads']} threads")
    print(f"backend='auto' runs {auto}; backends: {about['backends']}")
    print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}")
    (out / "table.md").write_text(text + "\n")
    (out / "results.json").write_text(
        json.dumps(
            {
                "command": command,
                "args": vars(args),
                "machine": about,
                "load_average": {"before": load_before, "after": load_after},
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
