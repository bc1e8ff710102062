"""Training the character model: truncated BPTT over parallel text streams, gradient clipping,
validation bits per character, atomic checkpoints and an exact resume.

Shapes: S stream length, T chunk (seq_len), B batch (streams), V vocabulary, L layers, H hidden.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

import cellstate
from cellstate.kernels import dispatch
from cellstate.lm.corpus import (
    DEFAULT_MAX_CHARS,
    Corpus,
    CorpusError,
    Vocabulary,
    load_corpus,
    split,
)
from cellstate.lm.model import LSTM_KINDS, CharLM, ModelConfig
from cellstate.training import checkpoint, run_dir
from cellstate.training.divergence import check_loss
from cellstate.training.interrupt import GracefulStop
from cellstate.validation import integer, number, one_of

CHECKPOINT_KIND = "cellstate-lm"
DEFAULT_MAX_STEPS = 2000
# What a resumed run may change: when to stop, evaluate and save. Everything else decides the
# numbers and must match the checkpoint for the resume to be exact.
RESUMABLE = frozenset({"out", "max_steps", "max_minutes", "eval_every", "checkpoint_every"})


@dataclass(frozen=True)
class TrainConfig:
    """A training run. It stops at ``max_steps`` or after ``max_minutes`` of training time
    (evaluation and checkpoint writes excluded, so that budgets compare models fairly),
    whichever comes first; with neither, after DEFAULT_MAX_STEPS. Empty ``texts``: the
    standard library's sources."""

    out: str = "runs/lm"
    texts: tuple[str, ...] = ()
    max_chars: int = DEFAULT_MAX_CHARS
    model: str = "cellstate"
    hidden: int = 256
    layers: int = 2
    embed: int = 64
    dropout: float = 0.0
    seq_len: int = 100
    batch: int = 32
    lr: float = 2e-3
    clip: float = 1.0
    seed: int = 0
    max_steps: int | None = None
    max_minutes: float | None = None
    eval_every: int = 200
    eval_chars: int = 100_000
    checkpoint_every: int = 200

    def __post_init__(self) -> None:
        object.__setattr__(self, "texts", tuple(str(t) for t in self.texts))
        for name in ("max_chars", "hidden", "layers", "embed", "seq_len", "batch"):
            integer(name, getattr(self, name))
        for name in ("eval_every", "eval_chars", "checkpoint_every"):
            integer(name, getattr(self, name))
        if self.max_steps is not None:
            integer("max_steps", self.max_steps)
        if self.max_minutes is not None:
            number("max_minutes", self.max_minutes, above=0)
        if self.max_steps is None and self.max_minutes is None:
            object.__setattr__(self, "max_steps", DEFAULT_MAX_STEPS)
        number("lr", self.lr, above=0)
        number("clip", self.clip, above=0)
        integer("seed", self.seed, 0)
        one_of("model", self.model, LSTM_KINDS)
        number("dropout", self.dropout, at_least=0, below=1)

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(
            vocab_size, self.hidden, self.layers, self.embed, self.dropout, lstm=self.model
        )

    def resumed(self, overrides: dict) -> TrainConfig:
        """This (stored) config with ``overrides`` applied; ValueError if one would change
        the numbers (anything but where and when to stop, evaluate and save)."""
        for name, value in overrides.items():
            current = getattr(self, name)
            if name not in RESUMABLE and value != current:
                raise ValueError(
                    f"--resume: {name} is {current!r} in the checkpoint, not {value!r} "
                    "(only where and when to stop, evaluate and save may change)"
                )
        return dataclasses.replace(self, **overrides)


def text_streams(ids: Tensor, batch: int) -> tuple[Tensor, Tensor]:
    """Inputs and next-character targets as ``batch`` parallel streams, each (S, B).

    Stream b is the b-th contiguous slice of the text, so a state carried from one chunk of a
    stream to the next has really seen the text before it.
    """
    S = (len(ids) - 1) // batch
    inputs = ids[: batch * S].view(batch, S).t()  # (S, B)
    targets = ids[1 : batch * S + 1].view(batch, S).t()  # (S, B)
    return inputs, targets


@torch.no_grad()
def bits_per_char(
    model: CharLM, ids: Tensor, batch: int, seq_len: int, max_chars: int | None = None
) -> float:
    """Mean next-character cross-entropy in bits over ``batch`` streams laid across ``ids``,
    the state carried along each; with ``max_chars``, each stream cut to its share, so that
    a partial evaluation still samples the whole text rather than its beginning."""
    was_training = model.training
    model.eval()
    streams = max(1, min(batch, (len(ids) - 1) // seq_len))
    inputs, targets = text_streams(ids, streams)  # (S, B) each
    if max_chars is not None:
        steps = max(1, max_chars // streams)
        inputs, targets = inputs[:steps], targets[:steps]
    total, state = 0.0, None
    for start in range(0, len(inputs), seq_len):
        logits, state = model(inputs[start : start + seq_len], state)  # (T, B, V)
        y = targets[start : start + seq_len]  # (T, B)
        total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
    model.train(was_training)
    return total / inputs.numel() / math.log(2)


class _RunFiles:
    """The run directory's files."""

    def __init__(self, out: str) -> None:
        self.dir = Path(out)
        self.config = self.dir / "config.json"
        self.checkpoint = self.dir / "checkpoint.pt"
        self.metrics = self.dir / "metrics.jsonl"
        self.result = self.dir / "result.json"

    def write_json(self, path: Path, data: dict) -> None:
        path.write_text(json.dumps(data, indent=2) + "\n")

    def log(self, record: dict) -> None:
        with self.metrics.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def drop_metrics_after(self, step: int) -> None:
        """Forget metrics logged after the checkpoint (a crash between the two)."""
        if self.metrics.exists():
            records = run_dir.read_jsonl(self.metrics)
            run_dir.rewrite_jsonl(self.metrics, [r for r in records if r.get("step", 0) <= step])


def load_lm_checkpoint(path: str | Path) -> dict:
    """A language-model checkpoint (ValueError for another kind, FileNotFoundError if none)."""
    state = checkpoint.load(path)
    if state.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{path} is a cellstate checkpoint, but not a language model's")
    return state


def build_model(state: dict) -> tuple[CharLM, Vocabulary]:
    """The model and vocabulary stored in a language-model checkpoint."""
    model = CharLM(ModelConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    return model, Vocabulary(state["vocab"])


def prepare(overrides: dict, resume: bool = False) -> tuple[TrainConfig, dict | None]:
    """The config to run (defaults <- ``overrides``, the fields given explicitly) and the
    checkpoint to resume from (None: a fresh run).

    With ``resume`` the checkpoint's config replaces the defaults, and an override that would
    change its numbers is an error. Without it, an existing checkpoint in ``out`` is an error,
    not overwritten.
    """
    out = overrides.get("out", TrainConfig.out)
    files = _RunFiles(out)
    if not resume:
        if files.checkpoint.exists():
            raise ValueError(
                f"{files.checkpoint} exists; pass --resume to continue it or choose another --out"
            )
        run_dir.check_writable(out)
        return TrainConfig(**overrides), None
    state = load_lm_checkpoint(files.checkpoint)
    stored = TrainConfig(**state["train_config"])
    return stored.resumed({**overrides, "out": out}), state


@dataclass(frozen=True)
class Data:
    """A run's text, ready to train on: (S, B) input and target streams, validation ids."""

    corpus: Corpus
    sha256: str
    vocab: Vocabulary
    train_chars: int
    val_chars: int
    inputs: Tensor
    targets: Tensor
    val_ids: Tensor


def load_data(config: TrainConfig, resume_from: dict | None = None) -> Data:
    """Load, split and encode the run's text (CorpusError if it cannot train this config, or
    is not the text ``resume_from`` was trained on)."""
    corpus = load_corpus(config.texts, config.max_chars)
    sha = hashlib.sha256(corpus.text.encode()).hexdigest()
    vocab = Vocabulary.from_text(corpus.text)
    if resume_from is not None and (
        resume_from["corpus_sha256"] != sha or resume_from["vocab"] != vocab.chars
    ):
        raise CorpusError("--resume: the text differs from the one the checkpoint was trained on")
    train_text, val_text = split(corpus.text)
    inputs, targets = text_streams(vocab.encode(train_text), config.batch)  # (S, B) each
    if len(inputs) < config.seq_len:
        raise CorpusError(
            f"the training text ({len(train_text)} characters) is too short for batch "
            f"{config.batch} x seq_len {config.seq_len}; use more text or smaller sizes"
        )
    val_ids = vocab.encode(val_text)
    return Data(corpus, sha, vocab, len(train_text), len(val_text), inputs, targets, val_ids)


def train(
    config: TrainConfig,
    data: Data,
    resume_from: dict | None = None,
    progress: bool | None = None,
) -> dict:
    """Run (or continue) training and return the result (also written to result.json).

    A SIGINT/SIGTERM stops it after the current step with a checkpoint to resume from; the
    result is then ``{"interrupted": signal name, "steps": ...}``.

    ``progress``: show a tqdm bar (None: only on a terminal).
    """
    files = _RunFiles(config.out)
    corpus, vocab, val_ids = data.corpus, data.vocab, data.val_ids
    chunks = len(data.inputs) // config.seq_len
    torch.manual_seed(config.seed)
    model_config = config.model_config(len(vocab))
    model = CharLM(model_config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    step, seconds, state, window = 0, 0.0, None, [0.0, 0]  # window: loss sum, steps
    chars_per_step = config.batch * config.seq_len
    if resume_from is not None:
        model.load_state_dict(resume_from["model"])
        optimizer.load_state_dict(resume_from["optimizer"])
        step, seconds, window = resume_from["step"], resume_from["seconds"], resume_from["window"]
        state = resume_from["state"]
        checkpoint.restore_rng_state(resume_from["rng"])
        files.drop_metrics_after(step)
    else:  # what a run killed before its first checkpoint logged is not this run's
        run_dir.start_fresh(files.dir, (files.metrics.name, files.result.name))

    files.dir.mkdir(parents=True, exist_ok=True)
    n_params = sum(p.numel() for p in model.parameters())
    files.write_json(
        files.config,
        {
            "train": dataclasses.asdict(config),
            "model": model_config.to_dict(),
            "parameters": n_params,
            "corpus": {
                "characters": len(corpus.text),
                "train_characters": data.train_chars,
                "validation_characters": data.val_chars,
                "evaluated_validation_characters": min(config.eval_chars, len(val_ids) - 1),
                "vocabulary": vocab.chars,
                "sha256": data.sha256,
                "sources": list(corpus.sources),
            },
            "versions": {
                "cellstate": cellstate.__version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
            "threads": torch.get_num_threads(),
            "backends": dispatch.backend_status(),
        },
    )
    print(
        f"corpus: {len(corpus.text):,} characters from {len(corpus.sources)} file(s), "
        f"vocabulary {len(vocab)}; model: {config.model} LSTM, {n_params:,} parameters"
    )

    def save() -> None:
        checkpoint.save_atomic(
            {
                "kind": CHECKPOINT_KIND,
                "model_config": model_config.to_dict(),
                "vocab": vocab.chars,
                "train_config": dataclasses.asdict(config),
                "corpus_sha256": data.sha256,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "seconds": seconds,
                "window": window,
                "state": state,
                "rng": checkpoint.rng_state(),
                "backends": backends,
            },
            files.checkpoint,
        )

    def evaluate() -> dict:
        record = {
            "step": step,
            "val_bpc": bits_per_char(
                model, val_ids, config.batch, config.seq_len, config.eval_chars
            ),
            "train_bpc": window[0] / window[1] / math.log(2) if window[1] else None,
            "train_seconds": seconds,
            "chars_per_second": step * chars_per_step / seconds if seconds else None,
        }
        files.log(record)
        window[:] = [0.0, 0]
        return record

    budget = config.max_minutes * 60 if config.max_minutes is not None else math.inf
    last_eval = None
    # Build (or load) the LSTM kernel before the clock starts: compiling is not training. In
    # evaluation mode nothing draws random numbers, so an exact resume stays exact.
    model.eval()
    with torch.no_grad():
        model(data.inputs[:1, :1])  # (1, 1)
    model.train()
    backends = checkpoint.continue_backends(
        resume_from.get("backends", []) if resume_from is not None else [],
        dispatch.resolve("auto", "cpu", torch.float32) if config.model == "cellstate" else "torch",
    )
    bar = tqdm(
        total=config.max_steps,
        initial=step,
        unit="step",
        disable=None if progress is None else not progress,
        dynamic_ncols=True,
    )
    with GracefulStop() as stop, bar:
        while (config.max_steps is None or step < config.max_steps) and seconds < budget:
            if stop.requested:
                break
            start = time.perf_counter()
            k = step % chunks
            if k == 0:  # a new pass over the text: its streams start from scratch
                state = None
            x = data.inputs[k * config.seq_len : (k + 1) * config.seq_len]  # (T, B)
            y = data.targets[k * config.seq_len : (k + 1) * config.seq_len]  # (T, B)
            logits, state = model(x, state)  # (T, B, V)
            state = (state[0].detach(), state[1].detach())  # truncated BPTT: carry, don't backprop
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
            advice = f"lower --lr ({config.lr:g})"
            check_loss(loss.item(), f"step {step + 1}", files.checkpoint, advice)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            optimizer.step()
            seconds += time.perf_counter() - start
            step += 1
            window[0] += loss.item()
            window[1] += 1
            bar.update(1)
            bar.set_postfix(
                bpc=f"{loss.item() / math.log(2):.3f}",
                chars_s=f"{step * chars_per_step / seconds:,.0f}",
                refresh=False,
            )
            if step % config.eval_every == 0:
                last_eval = evaluate()
                bar.write(f"step {step}: val bpc {last_eval['val_bpc']:.4f}")
            if step % config.checkpoint_every == 0:
                save()
        save()
    if stop.requested:
        return {"interrupted": stop.signal_name, "steps": step}

    if last_eval is None or last_eval["step"] != step:
        last_eval = evaluate()
    result = {
        "val_bpc": last_eval["val_bpc"],
        "steps": step,
        "chars_per_second": step * chars_per_step / seconds if seconds else None,
        "train_seconds": seconds,
        "train_characters": step * chars_per_step,
        "model": config.model,
        "parameters": n_params,
        "params_sha256": checkpoint.params_sha256(model),
    }
    files.write_json(files.result, result)
    return result
