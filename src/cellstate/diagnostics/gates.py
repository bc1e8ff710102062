"""Inside the LSTM: the gates and the cell state of one sequence over time, as heatmaps.

On a trained adding or temporal-order model the picture shows the seed's conveyor belt: the
input gate opens at the marked steps, the cell state latches the marked value, and the forget
gate stays near 1 in between so that the value rides along unchanged until the output needs it.

Shapes: T time, H hidden.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import SymLogNorm
from matplotlib.figure import Figure
from torch import Tensor

from cellstate.diagnostics.models import load_model
from cellstate.layers.lstm import LSTM
from cellstate.tasks import (
    AddingModernTask,
    AddingTask,
    Batch,
    FinalStepTask,
    MultiplicationTask,
    Task,
    TemporalOrderTask,
    TwoSequenceTask,
)
from cellstate.tasks.temporal_order import SYMBOLS
from cellstate.training.model import SequenceModel

GATES = ("i", "f", "o", "c")
MARKER_COLOUR = "magenta"
C_LINEAR = 0.1  # the cell-state colour scale is linear within +-C_LINEAR, logarithmic beyond
_TITLES = {
    "i": "input gate i_t",
    "f": "forget gate f_t",
    "o": "output gate o_t",
    "c": "cell state c_t",
}


@dataclass(frozen=True)
class GateTrace:
    """One sequence through an LSTM layer: i, f, o, c each (T, H), the task's marked steps,
    the target and the model's output at the last step."""

    i: Tensor
    f: Tensor
    o: Tensor
    c: Tensor
    markers: list[int]
    task: str
    target: list[float]
    output: list[float]


def marker_steps(task: Task, inputs: Tensor) -> list[int]:
    """The steps of one sequence's inputs (T, D) that carry what the task asks to remember."""
    if isinstance(task, AddingTask | MultiplicationTask | AddingModernTask):
        return torch.nonzero(inputs[:, 1] == 1).flatten().tolist()
    if isinstance(task, TemporalOrderTask):
        xy = inputs[:, SYMBOLS.index("X")] + inputs[:, SYMBOLS.index("Y")]
        return torch.nonzero(xy == 1).flatten().tolist()
    if isinstance(task, TwoSequenceTask):
        return list(range(task.n_informative))
    return []


@torch.no_grad()
def gate_trace(
    model: SequenceModel, task: Task, batch: Batch, index: int = 0, layer: int = 0
) -> GateTrace:
    """Sequence ``index`` of ``batch`` through ``model``'s LSTM layer ``layer``."""
    if not isinstance(model.recurrent, LSTM):
        raise TypeError(f"gate heatmaps need an LSTM; got {type(model.recurrent).__name__}")
    length = int(batch.lengths[index])
    weight = model.head.weight
    inputs = batch.inputs[:length, index : index + 1].to(weight)  # (T, 1, D)
    training = model.training
    model.eval()
    try:
        hidden, _, states = model.recurrent(inputs, return_states=True)
        output = model.readout(hidden[-1, 0], inputs[-1, 0])  # (O,)
    finally:
        model.train(training)

    def take(name: str) -> Tensor:
        return getattr(states, name)[layer, 0, :, 0].float().cpu()  # (T, H)

    final = isinstance(task, FinalStepTask)
    target = batch.targets[index] if final else batch.targets[length - 1, index]
    return GateTrace(
        *(take(name) for name in GATES),
        markers=marker_steps(task, inputs[:, 0].cpu()),
        task=task.name,
        # The first output_size columns: 3c's second column (the noise-free target) is a
        # reference for its accuracy, not something the model outputs.
        target=target.float().flatten()[: task.output_size].tolist(),
        output=output.float().flatten().tolist(),
    )


def trace_from_checkpoint(path: str | Path, seed: int = 0, index: int = 0) -> GateTrace:
    """The gate trace of a trained model (a ``cellstate train`` checkpoint) on one sequence of
    its own task, drawn from ``seed``."""
    model, config = load_model(path)
    task = config.task.build()
    batch = task.batch(index + 1, torch.Generator().manual_seed(seed))
    return gate_trace(model, task, batch, index)


def gate_heatmaps(trace: GateTrace, title: str | None = None) -> Figure:
    """Heatmaps of i, f, o (0 to 1) and c (diverging around 0, symmetric-log colour scale),
    units by time, with the task's marked steps drawn on the time axis. Save with
    ``figure.savefig(path)``."""
    T, H = trace.c.shape
    figure = Figure(figsize=(10, 8.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(GATES), 1, sharex=True)
    c_limit = max(float(trace.c.abs().max()), C_LINEAR)
    # Symmetric log beyond C_LINEAR: a cell that grows to |c| ~ 10 would otherwise wash out the
    # small values other cells latch.
    c_norm = SymLogNorm(C_LINEAR, vmin=-c_limit, vmax=c_limit, base=10)
    for ax, name in zip(axes, GATES, strict=True):
        values = getattr(trace, name).T.numpy()  # (H, T): units down, time across
        if name == "c":
            style = {"cmap": "RdBu_r", "norm": c_norm}
        else:
            style = {"cmap": "viridis", "vmin": 0, "vmax": 1}
        image = ax.imshow(values, aspect="auto", interpolation="nearest", **style)
        figure.colorbar(image, ax=ax, pad=0.01)
        ax.set_ylabel(f"{_TITLES[name]}\nunit")
        for step in trace.markers:
            # Magenta stands out on viridis and on the red/blue of the cell state alike.
            ax.axvline(step, color=MARKER_COLOUR, linestyle="--", linewidth=1, alpha=0.8)
    top = axes[0].secondary_xaxis("top")
    top.set_xticks(trace.markers, labels=[f"marker\nt={s}" for s in trace.markers])
    top.tick_params(colors=MARKER_COLOUR, labelsize=8)
    axes[-1].set_xlabel("time step t")
    target = ", ".join(f"{v:.3g}" for v in trace.target)
    output = ", ".join(f"{v:.3g}" for v in trace.output)
    figure.suptitle(
        title or f"{trace.task}: one sequence (T={T}, H={H}); target {target}, output {output}"
    )
    return figure
