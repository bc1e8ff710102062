"""The report's speech section (``cellstate speech train`` runs): a test utterance's
spectrogram with the CTC per-frame outputs under it, the word error rate curves, and the
results of every run (RNN beside LSTM)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from matplotlib.figure import Figure

from cellstate.report.html import Unavailable, _figure, _piece, _table
from cellstate.report.plots import COLOURS, new_figure
from cellstate.speech.ctc import BLANK, greedy_decode
from cellstate.speech.features import file_features
from cellstate.speech.manifest import read_manifest
from cellstate.speech.train import build_model, load_speech_checkpoint
from cellstate.training.run_dir import RunDir, read_json

TITLE = "Speech: connected digits with CTC"
INTRO = (
    "A bidirectional network reads log-mel frames and emits, per frame, a probability for each "
    "word and for the CTC blank; greedy decoding keeps the most likely label per frame, merges "
    "repeats and drops blanks. Word error rate on voices never heard in training."
)


def is_speech_run(path: Path) -> bool:
    config = read_json(RunDir(path).config)
    return config is not None and "features" in config


def speech_runs(run_dir: Path) -> list[Path]:
    """The speech run directories: ``run_dir`` itself or those right under it."""
    if is_speech_run(run_dir):
        return [run_dir]
    return sorted(p for p in run_dir.iterdir() if p.is_dir() and is_speech_run(p))


def _kind(run: Path) -> str:
    return read_json(RunDir(run).config)["train"]["model"]


def wer_figure(runs: list[Path]) -> Figure:
    """Word error rate on the test voices (solid: clean, dashed: 10 dB SNR, log scale) against
    training time, one colour per model kind."""
    figure = new_figure(9, 4)
    ax = figure.subplots()
    for run in runs:
        metrics = RunDir(run).read_metrics()
        colour = COLOURS.get(_kind(run))
        minutes = [m["train_seconds"] / 60 for m in metrics]
        # A WER of 0 has no place on a log axis: a gap, not a clipped line.
        wer = [m["wer"] or math.nan for m in metrics]
        noisy = [m["wer_noisy"] or math.nan for m in metrics]
        ax.plot(minutes, wer, "o-", ms=3, color=colour, label=run.name)
        ax.plot(minutes, noisy, "--", color=colour, alpha=0.6)
    ax.set_yscale("log")
    ax.set_xlabel("training minutes")
    ax.set_ylabel("word error rate (dashed: at 10 dB SNR)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return figure


def alignment_figure(checkpoint: Path, wav: Path, transcript: str) -> Figure:
    """Top: the utterance's normalised log-mel spectrogram. Bottom: each label's per-frame
    probability (the blank grey), the steps aligned under the frames they read."""
    model, vocab, features = build_model(load_speech_checkpoint(checkpoint))
    x = file_features(wav, features)  # (T, M)
    with torch.no_grad():
        log_probs, steps = model(x[:, None], torch.tensor([len(x)]))  # (T', 1, V + 1)
    probs = log_probs[:, 0].exp().numpy()  # (T', V + 1)
    heard = " ".join(vocab.decode(greedy_decode(log_probs, steps)[0]))
    figure = new_figure(10, 5.5)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    seconds = len(x) * features.hop / 16000
    top.imshow(
        x.t().numpy(),
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=(0, seconds, 0, x.shape[1]),
    )
    top.set_ylabel("mel band")
    top.set_title(f"said: {transcript}   heard: {heard}")
    step_seconds = model.config.stack * features.hop / 16000
    t = [(i + 0.5) * step_seconds for i in range(len(probs))]
    bottom.plot(t, probs[:, BLANK], color="0.7", label="blank")
    for label, word in enumerate(vocab.words, start=1):
        if probs[:, label].max() > 0.2:
            bottom.plot(t, probs[:, label], label=word)
    bottom.set_xlabel("seconds")
    bottom.set_ylabel("P(label)")
    bottom.legend(fontsize=8, ncol=6)
    return figure


def _results(runs: list[Path]) -> str:
    rows = []
    for run in runs:
        r = read_json(RunDir(run).result)
        if r is not None:
            rows.append(
                [
                    run.name,
                    r["model"],
                    f"{r['steps']:,}",
                    f"{r['seconds'] / 60:.1f}",
                    f"{r['wer']:.2%}",
                    f"{r['accuracy']:.1%}",
                    f"{r['wer_noisy']:.2%}",
                ]
            )
    if not rows:
        raise Unavailable("no result.json in any speech run")
    header = ["run", "model", "steps", "minutes", "WER", "strings right", "WER at 10 dB"]
    return _table(header, rows)


def _curves(runs: list[Path]) -> str:
    if not any(RunDir(run).read_metrics() for run in runs):
        raise Unavailable("no metrics.jsonl in any speech run")
    caption = "Word error rate on the held-out voices, clean (solid) and at 10 dB SNR (dashed)."
    return _figure(wer_figure(runs), "word error rate curves", caption)


def _alignment(runs: list[Path]) -> str:
    """The first LSTM run's (else any run's) checkpoint on the first test utterance."""
    with_checkpoint = [r for r in runs if (r / "checkpoint.pt").is_file()]
    if not with_checkpoint:
        raise Unavailable("no checkpoint.pt in any speech run")
    run = min(with_checkpoint, key=lambda r: _kind(r) != "lstm")
    data = Path(read_json(RunDir(run).config)["train"]["data"])
    utterance = read_manifest(data / "test.csv")[0]
    figure = alignment_figure(run / "checkpoint.pt", utterance.path, " ".join(utterance.words))
    caption = f"{run.name} on {utterance.path.name} ({utterance.voice or 'unnamed voice'})."
    return _figure(figure, "spectrogram and CTC outputs", caption)


def speech_section(run_dir: Path) -> str | None:
    """The section's HTML, or None when ``run_dir`` holds no speech run."""
    runs = speech_runs(run_dir)
    if not runs:
        return None
    return "".join(_piece(lambda b=b: b(runs)) for b in (_results, _curves, _alignment))
