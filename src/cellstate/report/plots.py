"""The figures of the report, of ``cellstate gradients`` and of ``cellstate compare``: matplotlib
Figures on the Agg canvas (no pyplot, no display), saved as PNG.

Gate heatmaps live beside their data in ``cellstate.diagnostics.gates``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator, StrMethodFormatter

from cellstate.diagnostics.exploding import ClippingDemo, growth_per_step
from cellstate.diagnostics.gradient_flow import GradientFlow

if TYPE_CHECKING:
    from cellstate.training.trainer import Result

# One colour per model kind, the same in every figure.
COLOURS = {"rnn": "tab:red", "lstm": "tab:blue"}


def new_figure(width: float = 10, height: float = 4.2) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png_bytes(figure: Figure, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_png(figure: Figure, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=dpi)
    return path


def _positive(values) -> list[float]:
    """Values for a log axis: zeros and non-finite values become gaps (NaN), not clipped lines."""
    return [v if v > 0 and math.isfinite(v) else math.nan for v in map(float, values)]


def _style(label: str) -> dict:
    """Colour by model kind (the label's first word); a model at initialisation drawn fainter
    than the trained one."""
    colour = next((c for kind, c in COLOURS.items() if label.lower().startswith(kind)), None)
    return {"color": colour, "alpha": 0.45 if "init" in label else 1.0}


def gradient_flow_figure(flows: dict[str, GradientFlow], title: str = "") -> Figure:
    """Left: ||dL/dh_t|| (solid) and ||dL/dc_t|| (dashed) over ||dL/dh_last|| against the lag,
    log scale, one curve per labelled flow. Right (when an RNN is among them): the RNN's step
    Jacobian norm ||dh_t/dh_{t-1}||_2 against the lag, with sigma_max and the spectral radius of
    W_hh."""
    rnns = {label: f for label, f in flows.items() if f.jacobian is not None}
    figure = new_figure(11 if rnns else 7, 4.4)
    axes = figure.subplots(1, 2 if rnns else 1, squeeze=False)[0]
    ax = axes[0]
    for label, flow in flows.items():
        style = _style(label)
        ax.plot(flow.lags, _positive(flow.h), **style, label=f"{label}: dL/dh")
        if flow.c is not None:
            ax.plot(flow.lags, _positive(flow.c), "--", **style, label=f"{label}: dL/dc")
    ax.set_yscale("log")
    ax.set_xlabel("lag k (steps before the loss)")
    ax.set_ylabel("gradient norm / ||dL/dh|| at the last step")
    ax.set_title("How much gradient reaches k steps back")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    if rnns:
        ax = axes[1]
        for label, flow in rnns.items():
            style = _style(label)
            ax.plot(flow.lags, flow.jacobian[0].tolist(), **style, label=label)
            ax.axhline(float(flow.sigma_max[0]), **style, linestyle=":", linewidth=1)
            ax.axhline(float(flow.radius[0]), **style, linestyle="-.", linewidth=1)
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xlabel("lag k")
        ax.set_ylabel("||dh_t/dh_{t-1}||_2 (batch mean)")
        ax.set_title("RNN step Jacobian (dotted: sigma_max(W_hh), dash-dot: radius)", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(True, alpha=0.3)
    if title:
        figure.suptitle(title)
    return figure


def exploding_figure(scaled: GradientFlow, radius: float, baseline: GradientFlow | None) -> Figure:
    """Left: the gradient-norm ratio against the lag (log) of the RNN with W_hh scaled to
    ``radius`` (and of the unscaled one). Right: growth per step, ratio[k] / ratio[k-1]."""
    figure = new_figure(11, 4.2)
    left, right = figure.subplots(1, 2)
    curves = [(f"W_hh scaled to spectral radius {radius:g}", scaled, "tab:red")]
    if baseline is not None:
        curves.append(
            (f"at initialisation (radius {float(baseline.radius[0]):.2f})", baseline, "grey")
        )
    for label, flow, colour in curves:
        left.plot(flow.lags, _positive(flow.h), color=colour, label=label)
        right.plot(flow.lags[1:], growth_per_step(flow.h).tolist(), color=colour, label=label)
    left.set_yscale("log")
    left.set_xlabel("lag k")
    left.set_ylabel("||dL/dh_t|| / ||dL/dh_last||")
    left.set_title("RNN gradient norm through time")
    right.axhline(1.0, color="black", linewidth=0.8)
    right.set_xlabel("lag k")
    right.set_ylabel("growth per step back")
    right.set_title("Gradient norm growth per step (>1: exploding)")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return figure


def clipping_figure(demo: ClippingDemo) -> Figure:
    """Left: training loss against sequences seen, with and without clipping. Right: the largest
    gradient norm of each evaluation window (before clipping), log scale, and the threshold."""
    figure = new_figure(11, 4.2)
    left, right = figure.subplots(1, 2)
    colours = {"clipped": "tab:green", "unclipped": "tab:orange"}
    threshold = demo.config.training.clip
    for name, records in demo.runs.items():
        label = f"clip at {threshold:g}" if name == "clipped" else "no clipping"
        x = [r["sequences"] for r in records]
        left.plot(
            x, [r["train_loss"] for r in records], "o-", ms=3, color=colours[name], label=label
        )
        right.plot(
            x,
            _positive(r["grad_norm_max"] for r in records),
            "o-",
            ms=3,
            color=colours[name],
            label=label,
        )
    right.axhline(threshold, color="black", linestyle="--", linewidth=1, label="threshold")
    left.set_xlabel("training sequences")
    left.set_ylabel("training loss (window mean)")
    left.set_title("Same seed, same batches: with and without clipping")
    right.set_yscale("log")
    right.set_xlabel("training sequences")
    right.set_ylabel("largest ||g|| in the window")
    right.set_title("Gradient norm before clipping")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return figure


def learning_curves_figure(runs: dict[str, list[dict]]) -> Figure:
    """Left: training and test loss against sequences (log). Right: test error rate."""
    figure = new_figure(11, 4.2)
    left, right = figure.subplots(1, 2)
    for label, records in runs.items():
        colour = _style(label)["color"]
        x = [r["sequences"] for r in records]
        train = [r["train_loss"] or 0 for r in records]  # None: no training since the last one
        left.plot(x, _positive(train), ":", color=colour, label=f"{label}: train")
        left.plot(
            x,
            _positive(r["test_loss"] for r in records),
            "o-",
            ms=3,
            color=colour,
            label=f"{label}: test",
        )
        right.plot(x, [r["test_error"] for r in records], "o-", ms=3, color=colour, label=label)
    left.set_yscale("log")
    left.set_ylabel("loss")
    left.set_title("Loss")
    right.set_ylabel("test error (fraction wrong)")
    right.set_ylim(-0.02, 1.02)
    right.set_title("Held-out error")
    for ax in (left, right):
        ax.set_xlabel("training sequences")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return figure


def comparison_figure(results: Sequence[Result], task: str) -> Figure:
    """``cellstate compare``'s plot. Left: training sequences to solve against the lag T, log-log
    (hollow markers: the budget was spent, not solved). Right: final test error against T."""
    figure = new_figure(11, 4.2)
    left, right = figure.subplots(1, 2)
    for model, colour in COLOURS.items():
        runs = sorted((r for r in results if r.model == model), key=lambda r: r.length or 0)
        if not runs:
            continue
        lengths = [r.length for r in runs]
        left.plot(lengths, [r.sequences for r in runs], color=colour, label=model.upper())
        for r in runs:
            left.scatter(
                r.length,
                r.sequences,
                color=colour,
                facecolors=colour if r.solved else "none",
                zorder=3,
            )
        right.plot(lengths, [r.test_error for r in runs], "o-", color=colour, label=model.upper())
    left.set(
        xscale="log",
        yscale="log",
        xlabel="lag T",
        ylabel="training sequences",
        title=f"{task}: sequences to solve (hollow: not solved)",
    )
    right.set(
        xscale="log", xlabel="lag T", ylabel="test error (fraction wrong)", ylim=(-0.02, 1.02)
    )
    right.set_title(f"{task}: final test error")
    lengths = sorted({r.length for r in results if r.length is not None})
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        # The lags themselves as ticks, in plain numbers rather than 10^x.
        ax.set_xticks(lengths, [str(T) for T in lengths])
        ax.xaxis.set_minor_locator(NullLocator())
    left.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    left.yaxis.set_minor_formatter(StrMethodFormatter("{x:,.0f}"))
    return figure
