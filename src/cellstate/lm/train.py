"""Training the character model: truncated BPTT over parallel text streams, gradient clipping,
validation bits per character, atomic checkpoints and an exact resume. LMTrainer says what a
step, an evaluation and a checkpoint are; the loop is training/step_trainer.py's (shared with
speech training), the run directory training/run_dir.py's.

Shapes: S stream length, T chunk (seq_len), B batch (streams), V vocabulary, L layers, H hidden.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from cellstate.kernels import dispatch
from cellstate.lm.corpus import (
    DEFAULT_MAX_CHARS,
    Corpus,
    CorpusError,
    Vocabulary,
    load_corpus,
    split,
)
from cellstate.lm.model import LSTM_KINDS, CharLM, CharLMConfig
from cellstate.training import checkpoint, step_trainer
from cellstate.training.step_trainer import StepTrainer
from cellstate.validation import integer, number, one_of

CHECKPOINT_KIND = "cellstate-lm"
DEFAULT_MAX_STEPS = 2000
# What a resumed run may change: when to stop, evaluate and save, and where it runs. Everything
# else decides the numbers and must match the checkpoint for the resume to be exact.
RESUMABLE = frozenset(
    {"out", "max_steps", "max_minutes", "eval_every", "checkpoint_every", "device"}
)


@dataclass(frozen=True)
class LMTrainConfig:
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
    device: str = "cpu"  # cpu or cuda[:N]: where the model and its batches live

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

    def model_config(self, vocab_size: int) -> CharLMConfig:
        return CharLMConfig(
            vocab_size, self.hidden, self.layers, self.embed, self.dropout, lstm=self.model
        )


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


def load_lm_checkpoint(path: str | Path) -> dict:
    """A language-model checkpoint (ValueError for another kind, FileNotFoundError if none)."""
    return checkpoint.load_kind(path, CHECKPOINT_KIND, "a language model's")


def build_model(state: dict) -> tuple[CharLM, Vocabulary]:
    """The model and vocabulary stored in a language-model checkpoint."""
    model = CharLM(CharLMConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    return model, Vocabulary(state["vocab"])


def prepare(overrides: dict, resume: bool = False) -> tuple[LMTrainConfig, dict | None]:
    """The config to run (defaults <- ``overrides``, the fields given explicitly) and the
    checkpoint to resume from (None: a fresh run).

    With ``resume`` the checkpoint's config replaces the defaults, and an override that would
    change its numbers is an error. Without it, an existing checkpoint in ``out`` is an error,
    not overwritten. A ``device`` torch cannot use is an error too.
    """
    return step_trainer.prepare(LMTrainConfig, overrides, resume, RESUMABLE, load_lm_checkpoint)


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


def load_data(config: LMTrainConfig, resume_from: dict | None = None) -> Data:
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


class LMTrainer(StepTrainer):
    """Truncated BPTT over the text's B parallel streams: step k trains on chunk k mod
    (S // T) of every stream, from the state the previous chunk left (detached), and a new
    pass over the text starts from a zero state."""

    kind = CHECKPOINT_KIND

    def __init__(self, config: LMTrainConfig, data: Data, resume_from: dict | None) -> None:
        self.device = step_trainer.torch_device(config.device)
        self.data = data
        self.inputs = data.inputs.to(self.device)  # (S, B)
        self.targets = data.targets.to(self.device)  # (S, B)
        self.val_ids = data.val_ids.to(self.device)
        self.chunks = len(data.inputs) // config.seq_len
        self.chars_per_step = config.batch * config.seq_len
        self.divergence_advice = f"lower --lr ({config.lr:g})"
        torch.manual_seed(config.seed)
        self.model_config = config.model_config(len(data.vocab))
        model = CharLM(self.model_config).to(self.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        self.state = None  # the streams' carried (h, c), each (L, B, H)
        super().__init__(config, model, optimizer, resume_from)
        if resume_from is not None and resume_from["state"] is not None:
            self.state = tuple(s.to(self.device) for s in resume_from["state"])
        self.n_params = sum(p.numel() for p in model.parameters())

    def describe(self) -> dict:
        config, data = self.config, self.data
        corpus, vocab = data.corpus, data.vocab
        print(
            f"corpus: {len(corpus.text):,} characters from {len(corpus.sources)} file(s), "
            f"vocabulary {len(vocab)}; model: {config.model} LSTM, {self.n_params:,} parameters"
        )
        return {
            "train": dataclasses.asdict(config),
            "model": self.model_config.to_dict(),
            "parameters": self.n_params,
            "corpus": {
                "characters": len(corpus.text),
                "train_characters": data.train_chars,
                "validation_characters": data.val_chars,
                "evaluated_validation_characters": min(config.eval_chars, len(data.val_ids) - 1),
                "vocabulary": vocab.chars,
                "sha256": data.sha256,
                "sources": list(corpus.sources),
            },
        }

    def warm_up(self) -> str:
        self.model.eval()
        with torch.no_grad():
            self.model(self.inputs[:1, :1])  # (1, 1)
        self.model.train()
        if self.config.model != "cellstate":
            return "torch"
        return dispatch.resolve("auto", self.device, torch.float32)

    def loss(self) -> Tensor:
        T, k = self.config.seq_len, self.step % self.chunks
        if k == 0:  # a new pass over the text: its streams start from scratch
            self.state = None
        x = self.inputs[k * T : (k + 1) * T]  # (T, B)
        y = self.targets[k * T : (k + 1) * T]  # (T, B)
        logits, state = self.model(x, self.state)  # (T, B, V)
        self.state = (state[0].detach(), state[1].detach())  # truncated BPTT: carry, no backprop
        return F.cross_entropy(logits.flatten(0, 1), y.flatten())

    def postfix(self, loss: float) -> dict:
        return {
            "bpc": f"{loss / math.log(2):.3f}",
            "chars_s": f"{self.step * self.chars_per_step / self.seconds:,.0f}",
        }

    def evaluate(self) -> dict:
        config, (loss_sum, steps) = self.config, self.window
        return {
            "step": self.step,
            "val_bpc": bits_per_char(
                self.model, self.val_ids, config.batch, config.seq_len, config.eval_chars
            ),
            "train_bpc": loss_sum / steps / math.log(2) if steps else None,
            "train_seconds": self.seconds,
            "chars_per_second": self._chars_per_second(),
        }

    def announce(self, record: dict) -> str:
        return f"step {record['step']}: val bpc {record['val_bpc']:.4f}"

    def checkpoint_entries(self) -> dict:
        return {
            "model_config": self.model_config.to_dict(),
            "vocab": self.data.vocab.chars,
            "corpus_sha256": self.data.sha256,
            "state": self.state,
        }

    def result(self, last: dict) -> dict:
        return {
            "val_bpc": last["val_bpc"],
            "steps": self.step,
            "chars_per_second": self._chars_per_second(),
            "train_seconds": self.seconds,
            "train_characters": self.step * self.chars_per_step,
            "model": self.config.model,
            "device": self.config.device,
            "parameters": self.n_params,
            "params_sha256": checkpoint.params_sha256(self.model),
        }

    def _chars_per_second(self) -> float | None:
        return self.step * self.chars_per_step / self.seconds if self.seconds else None


def train(
    config: LMTrainConfig,
    data: Data,
    resume_from: dict | None = None,
    progress: bool | None = None,
) -> dict:
    """Run (or continue) training and return the result (also written to result.json).

    A SIGINT/SIGTERM stops it after the current step with a checkpoint to resume from; the
    result is then ``{"interrupted": signal name, "steps": ...}``.

    ``progress``: show a tqdm bar (None: only on a terminal).
    """
    return LMTrainer(config, data, resume_from).run(progress)
