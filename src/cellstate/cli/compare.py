"""``cellstate compare``: the seed's claim, run and watched. Trains a plain RNN and an LSTM at each
lag and shows where the RNN stops learning while the LSTM goes on.

    cellstate compare                                  # the default demonstration (~3 min, 2 cores)
    cellstate compare --task adding --lengths 10,50,100,200 --max-sequences 100000

Writes DIR/compare.json, DIR/compare.png and one run directory per (model, length). The kernel's
compile (or load) and the process's start-up are timed apart from the runs' seconds.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict
from pathlib import Path

from cellstate.cli.errors import usage_error
from cellstate.kernels.cpu import build as cpu_kernel
from cellstate.report.html import write_report
from cellstate.report.plots import comparison_figure, save_png
from cellstate.training.config import (
    DEVICES,
    MODEL_KINDS,
    ModelConfig,
    RunConfig,
    TaskConfig,
    TrainingConfig,
)
from cellstate.training.run_dir import RunDir, check_writable, refuse_existing, write_json
from cellstate.training.trainer import Result, Trainer

# Chosen by measurement (RESULTS.md, "cellstate compare"): from the shortest lag the adding
# problem allows to the article's 1000, within ~3 minutes on 2 cores; the budget is what the
# LSTM needs at the slowest of these lags (seed 0), with a margin.
DEFAULT_TASK = "adding"
DEFAULT_LENGTHS = (11, 20, 50, 100, 200, 1000)
DEFAULT_BUDGET = 50_000
# An evaluation on the held-out set every this many sequences (runs are short: a dense curve shows
# the moment the LSTM finds the solution; each costs about as much as 800 training sequences).
EVAL_EVERY = 2000
CLAIM = (
    "The article's claim (Hochreiter & Schmidhuber 1997): an LSTM carries information across "
    "1000+ steps, where a plain RNN fails beyond about 10."
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="train an RNN and an LSTM at each lag; table, compare.json and a plot",
        description="Train a plain RNN and an LSTM on one task at several lags and compare "
        "the training sequences each needs to meet the paper's criterion.",
    )
    parser.add_argument("--task", default=DEFAULT_TASK, help="the task (default %(default)s)")
    parser.add_argument(
        "--lengths",
        default=",".join(map(str, DEFAULT_LENGTHS)),
        help="comma-separated lags T (default %(default)s)",
    )
    parser.add_argument("--models", default=",".join(("rnn", "lstm")), help="default rnn,lstm")
    parser.add_argument(
        "--hidden",
        type=int,
        help="hidden size H (default: the task's own, the one `cellstate train` uses)",
    )
    parser.add_argument(
        "--max-sequences", type=int, default=DEFAULT_BUDGET, help="budget of each run"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of every run (default 0)")
    parser.add_argument(
        "--test-size", type=int, default=2560, help="held-out sequences per run (default 2560)"
    )
    parser.add_argument("--out", help="output directory (default runs/compare-YYYYmmdd-HHMMSS)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--device", choices=DEVICES, default="cpu", help="default cpu")
    parser.set_defaults(func=run)


def _parse_list(text: str, name: str, convert) -> list:
    try:
        items = [convert(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError:
        raise ValueError(f"--{name}: expected a comma-separated list, got {text!r}") from None
    if not items:
        raise ValueError(f"--{name}: empty list")
    return items


def build_configs(args: argparse.Namespace) -> list[RunConfig]:
    """One RunConfig per (length, model), in the order they run (ValueError on bad arguments)."""
    lengths = _parse_list(args.lengths, "lengths", int)
    models = _parse_list(args.models, "models", str)
    for model in models:
        if model not in MODEL_KINDS:
            raise ValueError(f"--models: unknown model {model!r}; known: {', '.join(MODEL_KINDS)}")
    budget = args.max_sequences
    return [
        RunConfig(
            TaskConfig(args.task, length),
            ModelConfig(kind=model, hidden=args.hidden),
            TrainingConfig(
                max_sequences=budget,
                # A tiny budget still gets a few evaluations; the criterion is checked after
                # every batch regardless.
                eval_every=min(EVAL_EVERY, max(1, budget // 4)),
                checkpoint_every=budget,
                seed=args.seed,
                test_size=args.test_size,
                device=args.device,
            ),
        )
        for length in lengths
        for model in models
    ]


def table(results: list[Result]) -> str:
    """The comparison as a fixed-width text table."""
    rows = [f"{'length':>6}  {'model':<5}  {'solved':<6}  {'sequences':>9}  {'wrong':>9}  seconds"]
    for r in results:
        rows.append(
            f"{r.length if r.length is not None else '-':>6}  {r.model:<5}  "
            f"{'yes' if r.solved else 'no':<6}  {r.sequences:>9,}  "
            f"{f'{r.wrong}/{r.test_size}':>9}  {r.seconds:7.1f}"
        )
    return "\n".join(rows)


def verdict(results: list[Result]) -> str:
    """One line: the longest lag each model solved, and where the RNN failed but the LSTM not."""
    solved = {m: [r.length for r in results if r.model == m and r.solved] for m in MODEL_KINDS}
    parts = [
        f"{m.upper()} solved up to T={max(solved[m])}" if solved[m] else f"{m.upper()} solved none"
        for m in MODEL_KINDS
        if any(r.model == m for r in results)
    ]
    by_length: dict = {}
    for r in results:
        by_length.setdefault(r.length, {})[r.model] = r.solved
    gap = [T for T, s in by_length.items() if s.get("lstm") and s.get("rnn") is False]
    if gap:
        parts.append(f"the RNN fails where the LSTM succeeds at T={', '.join(map(str, gap))}")
    return "; ".join(parts)


def _outcome(model: str, runs: list[Result]) -> str:
    """What one model did across the lags, as a clause."""
    solved = [r.length for r in runs if r.solved]
    lengths = [r.length for r in runs]
    name = "the LSTM" if model == "lstm" else "the plain RNN"
    if len(solved) == len(runs) > 1:
        return f"{name} solved every lag from T={min(lengths)} to T={max(lengths)}"
    if solved:
        failed = [T for T in lengths if T not in solved]
        return (
            f"{name} solved T={', '.join(map(str, solved))} and failed at "
            f"T={', '.join(map(str, failed))}"
        )
    best = min(runs, key=lambda r: (r.wrong, r.length))
    return (
        f"{name} solved none of T={', '.join(map(str, lengths))} (fewest errors: "
        f"{best.wrong}/{best.test_size} test sequences wrong at T={best.length})"
    )


def answer(results: list[Result], budget: int, seed: int) -> str:
    """The measured answer to CLAIM in one sentence."""
    clauses = []
    for model in ("lstm", "rnn"):
        runs = sorted((r for r in results if r.model == model), key=lambda r: r.length or 0)
        if runs:
            clauses.append(_outcome(model, runs))
    text = "; ".join(clauses)
    return (
        f"Measured here on the {results[0].task} problem: {text} "
        f"(seed {seed}, at most {budget:,} training sequences per run)."
    )


def load_kernel() -> tuple[str, float]:
    """Compile or load the CPU kernel before the first run, so that its compile time is not
    counted in that run's seconds. Returns what happened and the seconds it took."""
    cached = cpu_kernel.is_built()
    start = time.perf_counter()
    try:
        cpu_kernel.load()
    except RuntimeError:
        what = f"unavailable ({cpu_kernel.failure()}): the runs use the reference backend"
    else:
        what = "ready (a build was in the cache)" if cached else "compiled"
    return what, time.perf_counter() - start


def startup_seconds() -> float | None:
    """Seconds since this process started (interpreter, imports, parsing), or None where the
    platform does not say (it is read from Linux's /proc)."""
    try:
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        # Field 22 of /proc/self/stat, counted after the ")" that closes the command name.
        ticks = float(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    return max(0.0, time.time() - (boot + ticks / os.sysconf("SC_CLK_TCK")))


def write_outputs(out: Path, summary: dict, results: list[Result]) -> list[Path]:
    """Everything compare writes from its results. The single place to add a report."""
    data_path, plot_path = out / "compare.json", out / "compare.png"
    write_json(data_path, summary)
    save_png(comparison_figure(results, summary["task"]), plot_path, dpi=110)
    return [data_path, plot_path, write_report(out)]


def run(args: argparse.Namespace) -> int:
    try:
        configs = build_configs(args)
    except ValueError as error:
        return usage_error("compare", error)
    out = Path(args.out or time.strftime("runs/compare-%Y%m%d-%H%M%S"))
    try:
        refuse_existing(out, "comparison")
        check_writable(out)
    except ValueError as error:
        return usage_error("compare", error)
    print(
        f"compare: {configs[0].task.name}, {len(configs)} runs of at most "
        f"{args.max_sequences:,} sequences each -> {out}"
    )
    startup = startup_seconds()
    kernel, kernel_seconds = load_kernel()
    print(
        f"start-up {'unknown' if startup is None else f'{startup:.1f} s'}; "
        f"CPU kernel {kernel}: {kernel_seconds:.1f} s (not counted in the runs' seconds)",
        flush=True,
    )
    results, runs = [], []
    start = time.perf_counter()
    for i, config in enumerate(configs, 1):
        name = f"{config.model.kind}-T{config.task.length}"
        run_dir = out / name
        RunDir(run_dir).start_fresh()  # compare always starts its runs afresh
        label = f"[{i}/{len(configs)}] {config.model.kind.upper()} T={config.task.length}"
        result = Trainer(config, run_dir, progress=not args.quiet, description=label).run()
        if result is None:  # interrupted: the finished runs are still worth writing
            break
        results.append(result)
        runs.append({"dir": name, "config": config.to_dict(), "result": asdict(result)})
        outcome = "solved" if result.solved else "not solved"
        print(
            f"{label}: {outcome} after {result.sequences:,} sequences, "
            f"{result.wrong}/{result.test_size} test wrong, {result.seconds:.1f} s",
            flush=True,
        )
    if not results:
        return 130
    summary = {
        "task": configs[0].task.name,
        "lengths": sorted({r.length for r in results}),
        "seconds": round(time.perf_counter() - start, 1),  # the runs, one after another
        "startup_seconds": None if startup is None else round(startup, 1),
        "kernel": kernel,
        "kernel_seconds": round(kernel_seconds, 1),
        "claim": CLAIM,
        "answer": answer(results, args.max_sequences, args.seed),
        "verdict": verdict(results),
        "runs": runs,
    }
    report_start = time.perf_counter()
    paths = write_outputs(out, summary, results)
    report_seconds = time.perf_counter() - report_start
    print()
    print(table(results))
    print(summary["verdict"])
    print(summary["answer"])
    print(
        f"wrote {', '.join(map(str, paths))} (runs {summary['seconds']:.0f} s, "
        f"report {report_seconds:.0f} s)"
    )
    return 0 if len(results) == len(configs) else 130
