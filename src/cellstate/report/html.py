"""One self-contained HTML page for a run directory: learning curves, the comparison, the
gradient flow, exploding gradients and clipping, and the LSTM's gates.

Every image is embedded as a data: URI and the style sheet is inline, so the page reads offline
and can be mailed as one file. A piece that cannot be produced says "not available: <why>".

    write_report("runs/compare-20250101-120000")   # -> runs/.../report.html
"""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.figure import Figure

import cellstate
from cellstate.diagnostics.exploding import CLIPPING_CONFIG, clipping_demo, exploding_flow
from cellstate.diagnostics.gates import gate_heatmaps, trace_from_checkpoint
from cellstate.diagnostics.gradient_flow import GradientFlow, gradient_flow
from cellstate.diagnostics.models import build_model, default_config, load_model
from cellstate.report.plots import (
    clipping_figure,
    exploding_figure,
    gradient_flow_figure,
    learning_curves_figure,
    png_bytes,
)
from cellstate.tasks import FinalStepTask
from cellstate.training.config import RunConfig
from cellstate.training.run_dir import RunDir, RunDirError, read_json

REPORT = "report.html"
FLOW_BATCH = 32
EXPLODE_RADIUS = 3.0
CLIP_RADIUS = 2.0


class Unavailable(Exception):
    """A piece of the report that cannot be produced, and why."""


@dataclass(frozen=True)
class Run:
    """One training run directory as ``cellstate train`` writes it."""

    name: str
    path: Path
    config: RunConfig | None
    metrics: list[dict]
    result: dict | None

    @property
    def checkpoint(self) -> Path | None:
        path = self.path / "checkpoint.pt"
        return path if path.is_file() else None

    @property
    def length(self) -> int:
        return self.config.task.build().length or 0

    @property
    def solved(self) -> bool:
        return bool(self.result and self.result["solved"])

    @property
    def setting(self) -> str:
        """The task and lag, e.g. "adding T=100" (the directory name without a config)."""
        if self.config is None:
            return self.name
        task = self.config.task.build()
        return task.name if task.length is None else f"{task.name} T={task.length}"

    @property
    def label(self) -> str:
        return self.setting if self.config is None else f"{self.config.model.kind} {self.setting}"


def _read_run(path: Path, name: str) -> Run:
    run = RunDir(path)
    config_data = read_json(run.config)
    try:
        config = RunConfig.from_dict(config_data) if config_data is not None else None
    except (TypeError, ValueError):  # a config.json of another version: show what else is there
        config = None
    return Run(name, path, config, run.read_metrics(), read_json(run.result))


def find_runs(run_dir: Path) -> list[Run]:
    """The runs of a ``cellstate compare`` directory (in its order), or the run that the
    directory itself is, or the run directories right under it."""
    compare = read_json(run_dir / "compare.json")
    if compare is not None:
        return [_read_run(run_dir / r["dir"], r["dir"]) for r in compare.get("runs", [])]
    if (run_dir / "config.json").is_file():
        return [_read_run(run_dir, run_dir.name)]
    subdirs = sorted(p for p in run_dir.iterdir() if (p / "config.json").is_file())
    if not subdirs:
        raise RunDirError(
            f"{run_dir}: expected a cellstate run (config.json), a comparison (compare.json) or "
            "directories of runs; found none"
        )
    return [_read_run(p, p.name) for p in subdirs]


# ---------------------------------------------------------------- HTML pieces


def _e(text: object) -> str:
    return html.escape(str(text))


def _image(png: bytes, alt: str, caption: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}">{cap}</figure>'


def _figure(figure: Figure, alt: str, caption: str = "") -> str:
    return _image(png_bytes(figure), alt, caption)


def _unavailable(why: str) -> str:
    return f'<p class="na">not available: {_e(why)}</p>'


def _table(header: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _piece(build: Callable[[], str]) -> str:
    """The HTML a piece builds, or why it is not available. A report must not die of one bad
    piece, so an unexpected error is shown with its type instead of being raised."""
    try:
        return build()
    except Unavailable as why:
        return _unavailable(str(why))
    except Exception as error:  # noqa: BLE001 - shown on the page, see the docstring
        return _unavailable(f"{type(error).__name__}: {error}")


# ---------------------------------------------------------------- sections


def _learning_curves(runs: list[Run], with_table: bool) -> str:
    with_metrics = [r for r in runs if r.metrics]
    if not with_metrics:
        raise Unavailable("no metrics.jsonl in any run")
    groups: dict[str, dict[str, list[dict]]] = {}
    for run in with_metrics:
        kind = run.config.model.kind if run.config else run.name
        groups.setdefault(run.setting, {})[kind] = run.metrics
    parts = [_results_table(runs)] if with_table else []
    for setting, curves in groups.items():
        caption = (
            f"{setting}: loss on the training batches (dotted, mean since the previous "
            "evaluation) and on the fixed held-out set (points), and the held-out error."
        )
        parts.append(_figure(learning_curves_figure(curves), f"learning curves {setting}", caption))
    return "".join(parts)


def _results_table(runs: list[Run]) -> str:
    rows = [
        [
            r.label,
            "yes" if r.solved else f"no ({r.result['stopped']})",
            f"{r.result['sequences']:,}",
            f"{r.result['wrong']}/{r.result['test_size']}",
            f"{r.result['paper_sequences']:,}" if r.result.get("paper_sequences") else "-",
            f"{r.result['seconds']:.1f}",
        ]
        for r in runs
        if r.result is not None
    ]
    header = ["run", "solved", "sequences", "test wrong", "paper (1997)", "seconds"]
    return _table(header, rows) if rows else _unavailable("no result.json in any run")


def _comparison(run_dir: Path) -> str:
    summary = read_json(run_dir / "compare.json")
    if summary is None:
        raise Unavailable(f"no compare.json in {run_dir} (not a cellstate compare directory)")
    parts = [f"<p><strong>{_e(summary.get('verdict', ''))}</strong></p>"]
    rows = []
    for entry in summary.get("runs", []):
        r = entry["result"]
        rows.append(
            [
                r["length"] if r["length"] is not None else "-",
                r["model"],
                "yes" if r["solved"] else "no",
                f"{r['sequences']:,}",
                f"{r['wrong']}/{r['test_size']}",
                f"{r['seconds']:.1f}",
            ]
        )
    parts.append(_table(["T", "model", "solved", "sequences", "test wrong", "seconds"], rows))
    plot = run_dir / "compare.png"
    if plot.is_file():
        parts.append(_image(plot.read_bytes(), "comparison plot", "compare.png"))
    else:
        parts.append(_unavailable(f"no compare.png in {run_dir}"))
    return "".join(parts)


def _headline(run_dir: Path) -> str:
    """The first screen of a comparison: the claim, the measured answer in one sentence, the
    plot beside them and where the time went. Empty for a directory that is not a comparison."""
    summary = read_json(run_dir / "compare.json")
    if summary is None or "answer" not in summary:
        return ""
    timing = f"The runs took {summary['seconds']:.0f} s one after another"
    if summary.get("startup_seconds") is not None:
        timing += f"; start-up {summary['startup_seconds']:.1f} s"
    timing += f"; CPU kernel {summary['kernel']}: {summary['kernel_seconds']:.1f} s."
    plot = run_dir / "compare.png"
    figure = (
        _image(plot.read_bytes(), "comparison plot")
        if plot.is_file()
        else _unavailable(f"no compare.png in {run_dir}")
    )
    return (
        f'<div class="headline"><div><p>{_e(summary["claim"])}</p>'
        f'<p class="answer">{_e(summary["answer"])}</p><p class="meta">{_e(timing)}</p></div>'
        f"{figure}</div>"
    )


def _focus(runs: list[Run]) -> list[Run]:
    """The runs with a checkpoint at the longest lag of the first task scored at the last step:
    where the difference between the models shows most."""
    usable = [
        r
        for r in runs
        if r.checkpoint is not None
        and r.config is not None
        and isinstance(r.config.task.build(), FinalStepTask)
    ]
    if not usable:
        raise Unavailable(
            "no checkpoint.pt of a run on a task scored at the last step (adding, "
            "multiplication, temporal-order, two-sequence) in the run directory"
        )
    task = usable[0].config.task.name
    same_task = [r for r in usable if r.config.task.name == task]
    longest = max(r.length for r in same_task)
    return [r for r in same_task if r.length == longest]


def _flow_table(flows: dict[str, GradientFlow]) -> str:
    K = min(len(f.h) for f in flows.values())
    lags = sorted({1, 10, K // 2, K - 1} & set(range(1, K)))
    rows = []
    for label, flow in flows.items():
        rows.append([f"{label}: dL/dh", *(f"{float(flow.h[k]):.2e}" for k in lags)])
        if flow.c is not None:
            rows.append([f"{label}: dL/dc", *(f"{float(flow.c[k]):.2e}" for k in lags)])
    return _table(["lag k", *map(str, lags)], rows)


def _gradient_flow(runs: list[Run]) -> str:
    focus = _focus(runs)
    flows: dict[str, GradientFlow] = {}
    for run in sorted(focus, key=lambda r: r.config.model.kind, reverse=True):  # rnn first
        task = run.config.task.build()
        batch = task.batch(FLOW_BATCH, torch.Generator().manual_seed(0))
        kind = run.config.model.kind
        initial = build_model(run.config, run.config.training.seed)
        flows[f"{kind} at init"] = gradient_flow(initial, task, batch)
        flows[f"{kind} trained"] = gradient_flow(load_model(run.checkpoint)[0], task, batch)
    setting = focus[0].setting
    caption = (
        f"{setting}, {FLOW_BATCH} sequences, loss at each sequence's last step. Left: the norm "
        "of the gradient with respect to the state carried k steps before the loss (solid: "
        "h, dashed: the LSTM's cell state c), relative to the gradient reaching h at the last "
        "step; faint: the same model at initialisation."
    )
    if any(flow.jacobian is not None for flow in flows.values()):
        caption += (
            " Right: the RNN's step Jacobian diag(tanh') W_hh. Its norm can exceed 1 while the "
            "product over many steps still shrinks at the rate set by the spectral radius."
        )
    figure = gradient_flow_figure(flows, setting)
    return _figure(figure, f"gradient flow {setting}", caption) + _flow_table(flows)


def _exploding(runs: list[Run]) -> str:
    try:
        config = _focus(runs)[0].config
        setting = (config.task.name, config.task.build().length)
    except Unavailable:  # no trained model to relate it to: the lab's default setting
        setting = ("adding", 100)
    rnn = default_config("rnn", *setting)
    scaled = exploding_flow(rnn, EXPLODE_RADIUS, FLOW_BATCH)
    task = rnn.task.build()
    batch = task.batch(FLOW_BATCH, torch.Generator().manual_seed(0))
    baseline = gradient_flow(build_model(rnn), task, batch)
    K = len(scaled.h)
    caption = (
        f"The default RNN on {setting[0]} T={task.length} with W_hh scaled to spectral radius "
        f"{EXPLODE_RADIUS:g}: the gradient norm {K - 1} steps back is "
        f"{float(scaled.h[-1]):.2e} times the last step's (geometric mean growth "
        f"{float(scaled.h[-1]) ** (1 / (K - 1)):.2f} per step); unscaled it is "
        f"{float(baseline.h[-1]):.2e}."
    )
    return _figure(exploding_figure(scaled, EXPLODE_RADIUS, baseline), "exploding", caption)


def _clipping() -> str:
    demo = clipping_demo(CLIPPING_CONFIG, CLIP_RADIUS)
    t = demo.config.training
    outcome = "; ".join(
        f"{name}: {r['stopped']} after {r['sequences']:,} sequences, test loss {r['test_loss']:.4f}"
        for name, r in demo.results.items()
    )
    caption = (
        f"An RNN with W_hh scaled to spectral radius {demo.radius:g} trained on "
        f"{demo.config.task.name} T={demo.config.task.length} with plain SGD (lr {t.lr:g}), "
        f"once clipping the gradient norm at {t.clip:g} and once not, from the same seed. "
        f"{outcome}."
    )
    return _figure(clipping_figure(demo), "clipping", caption)


def _gates(runs: list[Run]) -> str:
    lstms = [
        r
        for r in runs
        if r.checkpoint is not None and r.config is not None and r.config.model.kind == "lstm"
    ]
    if not lstms:
        raise Unavailable("no LSTM checkpoint.pt in the run directory")
    # Per task, the longest lag solved (the latching shows on a trained model), else the longest.
    chosen: dict[str, Run] = {}
    for run in sorted(lstms, key=lambda r: (r.solved, r.length)):
        chosen[run.config.task.name] = run
    parts = []
    for run in chosen.values():
        trace = trace_from_checkpoint(run.checkpoint)
        caption = (
            f"{run.label} ({'solved' if run.solved else 'not solved'}), one test sequence. "
            "Magenta dashed lines: the steps the task asks to remember. Gates run from 0 (closed) "
            "to 1 (open); the cell state is red above 0 and blue below, on a symmetric-log scale."
        )
        parts.append(_figure(gate_heatmaps(trace), f"gates {run.label}", caption))
    return "".join(parts)


SECTIONS = (
    (
        "Learning curves",
        "How training went: the loss and the held-out error against the training sequences "
        "presented (the 1997 paper's unit).",
    ),
    (
        "Comparison",
        "The plain RNN against the LSTM at each lag: training sequences to meet the paper's "
        "criterion.",
    ),
    (
        "Gradient flow: the vanishing gradient",
        "Backpropagation through time multiplies the gradient by the recurrent weights once per "
        "step back. In the plain RNN the product shrinks geometrically, so a loss at the end of "
        "a sequence barely reaches the steps that carried the information. The LSTM's cell state "
        "is a conveyor belt: its gradient is scaled only by the forget gate and survives.",
    ),
    (
        "Exploding gradients and clipping",
        "With the recurrent weights' spectral radius above 1 the same product grows instead. "
        "Clipping rescales a gradient whose norm exceeds a threshold to that threshold.",
    ),
    (
        "Inside the LSTM: gates and cell state",
        "One sequence through the trained LSTM: the input gate admits the marked values, the cell "
        "state holds them, and the forget gate stays near 1 in between.",
    ),
)

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       max-width: 1150px; margin: 2em auto; padding: 0 1em; line-height: 1.5; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; }
h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
.meta { color: #666; font-size: 0.9em; }
.intro { color: #444; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: right; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
.na { color: #8a5a00; background: #fff6e0; border-left: 4px solid #e0a800; padding: 0.4em 0.8em; }
nav a { margin-right: 1em; }
.headline { display: flex; gap: 1.5em; align-items: center; flex-wrap: wrap; }
.headline > div { flex: 1 1 18em; }
.headline figure { flex: 2 1 32em; margin: 0; }
.answer { font-size: 1.15em; font-weight: 600; }
"""


def render(run_dir: Path) -> str:
    """The report page of ``run_dir`` as a string."""
    from cellstate.report import speech  # imports this module's helpers

    runs = [r for r in find_runs(run_dir) if not speech.is_speech_run(r.path)]
    # A comparison has its own table; a single run's result goes with its curves.
    is_comparison = (run_dir / "compare.json").is_file()
    builders = (
        lambda: _learning_curves(runs, with_table=not is_comparison),
        lambda: _comparison(run_dir),
        lambda: _gradient_flow(runs),
        lambda: _exploding(runs) + _piece(_clipping),
        lambda: _gates(runs),
    )
    body = []
    nav = []
    for n, ((title, intro), build) in enumerate(zip(SECTIONS, builders, strict=True), 1):
        nav.append(f'<a href="#s{n}">{_e(title)}</a>')
        body.append(
            f'<section id="s{n}"><h2>{_e(title)}</h2><p class="intro">{_e(intro)}</p>'
            f"{_piece(build)}</section>"
        )
    speech_html = speech.speech_section(run_dir)
    if speech_html is not None:
        n = len(nav) + 1
        nav.append(f'<a href="#s{n}">{_e(speech.TITLE)}</a>')
        body.append(
            f'<section id="s{n}"><h2>{_e(speech.TITLE)}</h2><p class="intro">{_e(speech.INTRO)}'
            f"</p>{speech_html}</section>"
        )
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    meta = (
        f"{_e(run_dir.resolve())} &middot; {len(runs)} run(s) &middot; generated {when} by "
        f"cellstate {_e(cellstate.__version__)}, torch {_e(torch.__version__)}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>cellstate report: {_e(run_dir.name)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>cellstate report: {_e(run_dir.name)}</h1><p class='meta'>{meta}</p>"
        f"{_headline(run_dir)}<nav>{''.join(nav)}</nav>{''.join(body)}</body></html>\n"
    )


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir``/report.html (see the module docstring) and return its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run directory {run_dir}")
    page = render(run_dir)
    path = run_dir / REPORT
    tmp = path.with_name(f".{REPORT}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
