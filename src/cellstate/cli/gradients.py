"""``cellstate gradients``: the vanishing gradient, measured. How much of a last-step loss's
gradient reaches the state k steps back, for the plain RNN and the LSTM.

    cellstate gradients                                  # both models at init, adding T=100
    cellstate gradients --length 1000 --json             # {"lags": [...], "rnn": [...], ...}
    cellstate gradients --checkpoint runs/a100/checkpoint.pt   # a trained model
    cellstate gradients --model rnn --explode 3 --clipping     # exploding gradients, clipping

Writes OUT/gradient_flow.png (and exploding.png, clipping.png when asked) and
OUT/gradients.json. Exit 0, or 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from cellstate.cli.errors import usage_error
from cellstate.diagnostics.exploding import clipping_demo, exploding_flow, growth_per_step
from cellstate.diagnostics.gradient_flow import GradientFlow, gradient_flow
from cellstate.diagnostics.models import build_model, default_config, load_model
from cellstate.report.plots import (
    clipping_figure,
    exploding_figure,
    gradient_flow_figure,
    save_png,
)
from cellstate.training.config import RunConfig, TaskConfig

SHOWN_LAGS = (1, 5, 10, 20, 50, 100, 200, 500, 1000)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "gradients",
        help="gradient flow through time: the RNN's vanishing gradient vs the LSTM's cell state",
        description="For a batch of task sequences and a loss at the last step, the norm of "
        "dL/dh_t (and dL/dc_t for the LSTM) at every step t, relative to dL/dh at the last step. "
        "Without --checkpoint the models are the lab's defaults (cellstate train's) at "
        "initialisation.",
    )
    parser.add_argument(
        "--model", choices=("rnn", "lstm", "both"), default="both", help="default: both"
    )
    parser.add_argument("--task", help="a task scored at the last step (default: adding)")
    parser.add_argument("--length", type=int, help="T (default: the task's, or the checkpoint's)")
    parser.add_argument(
        "--checkpoint",
        action="append",
        metavar="PATH",
        help="a cellstate train checkpoint to measure instead (repeat for one RNN and one LSTM)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="task sequences averaged over (default 32)"
    )
    parser.add_argument("--seed", type=int, default=0, help="for the batch and the initial weights")
    parser.add_argument("--out", default="runs/gradients", help="where the plots go")
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    parser.add_argument(
        "--explode",
        type=float,
        nargs="?",
        const=3.0,
        metavar="RADIUS",
        help="also the RNN with W_hh scaled to spectral radius RADIUS (default 3)",
    )
    parser.add_argument(
        "--clipping",
        action="store_true",
        help="also train an exploding RNN with and without clipping (a few seconds)",
    )
    parser.set_defaults(func=run)


def _models(args) -> dict[str, tuple[torch.nn.Module, RunConfig]]:
    """{kind: (model, config)}, from checkpoints or the lab's defaults (ValueError if bad)."""
    if not args.checkpoint:
        kinds = ("rnn", "lstm") if args.model == "both" else (args.model,)
        configs = {kind: default_config(kind, args.task or "adding", args.length) for kind in kinds}
        return {kind: (build_model(c, args.seed), c) for kind, c in configs.items()}
    models = {}
    for path in args.checkpoint:
        model, config = load_model(path)
        kind = config.model.kind
        if kind in models:
            raise ValueError(f"two {kind} checkpoints; give at most one per model kind")
        if args.task is not None and args.task != config.task.name:
            raise ValueError(f"{path} was trained on {config.task.name}, not {args.task}")
        if args.length is not None:  # the trained model, measured at another length
            task = TaskConfig(config.task.name, args.length)
            config = RunConfig(task, config.model, config.training)
        models[kind] = (model, config)
    return models


def measure(args) -> tuple[dict, dict[str, GradientFlow], str]:
    """The JSON record, the flows by model kind, and a description of the setting."""
    models = _models(args)
    record: dict = {}
    flows: dict[str, GradientFlow] = {}
    for kind, (model, config) in models.items():
        task = config.task.build()
        batch = task.batch(args.batch_size, torch.Generator().manual_seed(args.seed))
        flows[kind] = flow = gradient_flow(model, task, batch)
        record[kind] = flow.h.tolist()
        if flow.c is not None:
            record[f"{kind}_c"] = flow.c.tolist()
        if flow.jacobian is not None:
            record[f"{kind}_jacobian_norm"] = flow.jacobian[0].tolist()
            record[f"{kind}_w_hh_sigma_max"] = float(flow.sigma_max[0])
            record[f"{kind}_w_hh_spectral_radius"] = float(flow.radius[0])
    tasks = {(c.task.name, c.task.build().length) for _, c in models.values()}
    setting = ", ".join(f"{name} T={length}" for name, length in sorted(tasks))
    state = "trained" if args.checkpoint else "at initialisation"
    lags = list(range(max(len(f.h) for f in flows.values())))
    head = {"task": setting, "models": state, "batch_size": args.batch_size, "lags": lags}
    return {**head, **record}, flows, f"{setting}, {state}, batch {args.batch_size}"


def _table(record: dict, flows: dict[str, GradientFlow]) -> str:
    K = len(record["lags"])
    lags = [k for k in SHOWN_LAGS if k < K - 1] + [K - 1]
    lines = ["lag k        " + "".join(f"{k:>10}" for k in lags)]
    for kind, flow in flows.items():
        rows = [(f"{kind} dL/dh", flow.h)] + (
            [(f"{kind} dL/dc", flow.c)] if flow.c is not None else []
        )
        for name, values in rows:
            cells = "".join(
                f"{float(values[k]):>10.2e}" if k < len(values) else " " * 10 for k in lags
            )
            lines.append(f"{name:<13}{cells}")
        if flow.jacobian is not None:
            lines.append(
                f"{kind} W_hh: sigma_max {float(flow.sigma_max[0]):.3f}, spectral radius "
                f"{float(flow.radius[0]):.3f}; ||dh_t/dh_(t-1)||_2 mean "
                f"{float(flow.jacobian[0].mean()):.3f}"
            )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        record, flows, setting = measure(args)
    except (ValueError, FileNotFoundError, NotImplementedError) as error:
        return usage_error("gradients", error)
    out = Path(args.out)
    written = [save_png(gradient_flow_figure(flows, setting), out / "gradient_flow.png")]
    if args.explode is not None:
        rnn_config = default_config("rnn", args.task or "adding", args.length)
        scaled = exploding_flow(rnn_config, args.explode, args.batch_size, args.seed)
        baseline = flows.get("rnn") if not args.checkpoint else None
        record["exploding"] = {
            "spectral_radius": args.explode,
            "rnn": scaled.h.tolist(),
            "growth_per_step": growth_per_step(scaled.h).tolist(),
        }
        written.append(
            save_png(exploding_figure(scaled, args.explode, baseline), out / "exploding.png")
        )
    if args.clipping:
        demo = clipping_demo()
        record["clipping"] = demo.to_dict()
        written.append(save_png(clipping_figure(demo), out / "clipping.png"))
    (out / "gradients.json").write_text(json.dumps(record, indent=1) + "\n")
    if args.json:
        print(json.dumps(record))
        return 0
    print(f"gradient flow: ||dL/dh_t|| (and ||dL/dc_t||) / ||dL/dh_last|| at lag k; {setting}")
    print(_table(record, flows))
    if "exploding" in record:
        ratios = record["exploding"]["rnn"]
        lag = len(ratios) - 1
        print(
            f"exploding: W_hh at spectral radius {args.explode:g}: ratio at lag {lag} "
            f"{ratios[-1]:.2e}, geometric mean growth per step {ratios[-1] ** (1 / lag):.3f}"
        )
    if args.clipping:
        for name, result in record["clipping"]["results"].items():
            print(
                f"clipping demo, {name}: {result['stopped']} after {result['sequences']:,} "
                f"sequences, test loss {result['test_loss']:.4f}"
            )
    for path in written:
        print(f"wrote {path}")
    return 0
