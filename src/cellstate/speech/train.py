"""Training the recogniser: CTC loss over random utterance batches, gradient-norm clipping,
Adam, optional SpecAugment; evaluation by greedy decoding on the held-out voices, clean and
at 10 dB SNR; atomic checkpoints and an exact resume.

Run directory (training/run_dir.py): config.json, metrics.jsonl (one line per evaluation),
checkpoint.pt, result.json. The loop is training/step_trainer.py's, shared with ``lm train``.
Shapes: T frames, B batch, M mel bands, V + 1 labels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from cellstate.kernels import dispatch
from cellstate.speech.audio import one_thread
from cellstate.speech.augment import spec_augment
from cellstate.speech.ctc import Vocabulary, greedy_decode, word_error_rate
from cellstate.speech.features import FeatureConfig, file_features
from cellstate.speech.manifest import read_manifest
from cellstate.speech.model import SpeechModel, SpeechModelConfig
from cellstate.training import checkpoint, step_trainer
from cellstate.training.step_trainer import StepTrainer
from cellstate.validation import fail, integer, number

CHECKPOINT_KIND = "cellstate-speech"
NOISY_SNR_DB = 10.0
NOISE_SEED = 10_000  # the test set's added noise: the same for every run and seed
DEFAULT_MAX_MINUTES = 20.0
DEFAULT_FORGET_BIAS = {"lstm": 1.0, "rnn": 0.0}
EVAL_BATCH = 64
# What a resumed run may change: when to stop, evaluate and save, and where it runs.
RESUMABLE = frozenset(
    {"out", "max_steps", "max_minutes", "eval_every", "checkpoint_every", "device"}
)


@dataclass(frozen=True)
class SpeechTrainConfig:
    """A training run on DATA/train.csv, evaluated on DATA/test.csv. It stops at ``max_steps``
    or after ``max_minutes`` of training time (evaluation and checkpoint writes excluded, so
    budgets compare models fairly), whichever comes first; with neither, after
    DEFAULT_MAX_MINUTES."""

    data: str = "data/digits"
    out: str = "runs/speech"
    model: str = "lstm"
    hidden: int = 128
    layers: int = 2
    stack: int = 3
    dropout: float = 0.0
    forget_bias: float | None = None  # None: 1.0 for the LSTM (the RNN has no forget gate)
    layer_norm: bool = False
    zoneout: float = 0.0
    spec_augment: bool = True
    batch: int = 32
    lr: float = 2e-3
    clip: float = 1.0
    seed: int = 0
    max_steps: int | None = None
    max_minutes: float | None = None
    eval_every: int = 200
    checkpoint_every: int = 200
    device: str = "cpu"
    threads: int | None = None  # torch's CPU threads; None: torch's default (all cores)

    def __post_init__(self) -> None:
        for name in ("batch", "eval_every", "checkpoint_every"):
            integer(name, getattr(self, name))
        for name in ("max_steps", "threads"):  # None: no step limit, torch's thread count
            if getattr(self, name) is not None:
                integer(name, getattr(self, name))
        number("lr", self.lr, above=0)
        number("clip", self.clip, above=0)
        if self.max_minutes is not None:
            number("max_minutes", self.max_minutes, above=0)
        if self.max_steps is None and self.max_minutes is None:
            object.__setattr__(self, "max_minutes", DEFAULT_MAX_MINUTES)
        integer("seed", self.seed, 0)
        if self.device != "cpu" and not self.device.startswith("cuda"):
            fail("device", "cpu or cuda[:N]", self.device)
        self.model_config(2)  # validates the model's fields

    def model_config(self, labels: int) -> SpeechModelConfig:
        return SpeechModelConfig(
            labels,
            FeatureConfig().mels,
            self.model,
            self.hidden,
            self.layers,
            self.stack,
            self.dropout,
            self.forget_bias
            if self.forget_bias is not None
            else DEFAULT_FORGET_BIAS.get(self.model, 0.0),
            self.layer_norm,
            self.zoneout,
        )


@dataclass
class Split:
    """A manifest's utterances as features (T_i, M) and label lists."""

    features: list[Tensor]
    labels: list[list[int]]


@dataclass
class Data:
    vocab: Vocabulary
    sha256: str  # of the two manifests' bytes
    train: Split
    test: Split
    test_noisy: Split
    seconds: float  # computing the features


def _load_split(
    manifest: Path,
    vocab: Vocabulary,
    features: FeatureConfig,
    stack: int,
    snr_db: float | None,
    progress: bool | None,
) -> Split:
    split = Split([], [])
    utterances = read_manifest(manifest)
    desc = f"features {manifest.name}" + (f" at {snr_db:g} dB" if snr_db is not None else "")
    for i, utt in enumerate(tqdm(utterances, desc=desc, unit="utt", disable=progress is False)):
        generator = torch.Generator().manual_seed(NOISE_SEED + i) if snr_db is not None else None
        x = file_features(utt.path, features, snr_db, generator)  # (T, M)
        labels = vocab.encode(utt.words, str(utt.path))
        # CTC needs a step per label plus a blank between equal neighbours.
        needed = len(labels) + sum(a == b for a, b in zip(labels, labels[1:], strict=False))
        if math.ceil(len(x) / stack) < needed:
            raise ValueError(
                f"{utt.path}: {len(x)} frames ({math.ceil(len(x) / stack)} steps at stack "
                f"{stack}) are too few for the {len(labels)} words of its transcript"
            )
        split.features.append(x)
        split.labels.append(labels)
    return split


def load_data(config: SpeechTrainConfig, resume_from: dict | None = None, progress=None) -> Data:
    """Read DATA/train.csv and DATA/test.csv and compute every utterance's features
    (ManifestError, AudioError: which file and what is wrong)."""
    root = Path(config.data)
    train_csv, test_csv = root / "train.csv", root / "test.csv"
    train_utts = read_manifest(train_csv)
    read_manifest(test_csv)  # fails early, before the long feature pass
    sha = hashlib.sha256(train_csv.read_bytes() + b"\0" + test_csv.read_bytes()).hexdigest()
    vocab = Vocabulary(w for u in train_utts for w in u.words)
    if resume_from is not None and (
        resume_from["data_sha256"] != sha or list(resume_from["vocab"]) != list(vocab.words)
    ):
        raise ValueError("--resume: the manifests differ from those the checkpoint trained on")
    start = time.perf_counter()
    features = FeatureConfig()
    with one_thread():
        train = _load_split(train_csv, vocab, features, config.stack, None, progress)
        test = _load_split(test_csv, vocab, features, config.stack, None, progress)
        noisy = _load_split(test_csv, vocab, features, config.stack, NOISY_SNR_DB, progress)
    return Data(vocab, sha, train, test, noisy, time.perf_counter() - start)


def batch_of(split: Split, indices: list[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Padded features (T, B, M), frame lengths (B,), concatenated targets, target lengths."""
    xs = [split.features[i] for i in indices]
    lengths = torch.tensor([len(x) for x in xs])
    features = torch.nn.utils.rnn.pad_sequence(xs)  # (T, B, M)
    targets = torch.tensor([label for i in indices for label in split.labels[i]])
    target_lengths = torch.tensor([len(split.labels[i]) for i in indices])
    return features, lengths, targets, target_lengths


@torch.no_grad()
def evaluate(model: SpeechModel, split: Split, device: str) -> tuple[float, float, list]:
    """Greedy-decoding word error rate and digit-string accuracy over a split, and the
    hypotheses (label lists, in the split's order)."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(split.features)), key=lambda i: len(split.features[i]))
    hypotheses: list = [None] * len(order)
    for start in range(0, len(order), EVAL_BATCH):
        indices = order[start : start + EVAL_BATCH]
        features, lengths, _, _ = batch_of(split, indices)
        log_probs, steps = model(features.to(device), lengths.to(device))  # (T', B, V + 1)
        for i, labels in zip(indices, greedy_decode(log_probs.cpu(), steps.cpu()), strict=True):
            hypotheses[i] = labels
    model.train(was_training)
    wer = word_error_rate(split.labels, hypotheses)
    accuracy = sum(h == r for h, r in zip(hypotheses, split.labels, strict=True)) / len(order)
    return wer, accuracy, hypotheses


def load_speech_checkpoint(path: str | Path) -> dict:
    """A speech checkpoint (ValueError for another kind, FileNotFoundError if none)."""
    return checkpoint.load_kind(path, CHECKPOINT_KIND, "a speech model's")


def build_model(state: dict) -> tuple[SpeechModel, Vocabulary, FeatureConfig]:
    """The model (in eval mode), vocabulary and feature settings of a speech checkpoint."""
    model = SpeechModel(SpeechModelConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    return model.eval(), Vocabulary(state["vocab"]), FeatureConfig(**state["feature_config"])


def prepare(overrides: dict, resume: bool = False) -> tuple[SpeechTrainConfig, dict | None]:
    """The config to run (defaults <- ``overrides``) and the checkpoint to resume from (None:
    a fresh run). With ``resume`` the checkpoint's config replaces the defaults and an override
    that would change its numbers is an error; without it an existing checkpoint is an error.
    A ``device`` torch cannot use is an error too."""
    return step_trainer.prepare(
        SpeechTrainConfig, overrides, resume, RESUMABLE, load_speech_checkpoint
    )


class SpeechTrainer(StepTrainer):
    """CTC on random batches of training utterances (drawn, with the SpecAugment masks, from
    a generator seeded by the run's seed)."""

    kind = CHECKPOINT_KIND
    divergence_advice = (
        "lower --lr ({lr:g}); an infinite CTC loss also comes from a transcript "
        "with more words than its audio has steps"
    )

    def __init__(self, config: SpeechTrainConfig, data: Data, resume_from: dict | None) -> None:
        self.device = step_trainer.torch_device(config.device)
        self.data = data
        self.divergence_advice = self.divergence_advice.format(lr=config.lr)
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.batches = torch.Generator().manual_seed(config.seed)  # batch choice and masks
        self.model_config = config.model_config(len(data.vocab))
        model = SpeechModel(self.model_config).to(self.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        self.ctc = torch.nn.CTCLoss(blank=0)
        super().__init__(config, model, optimizer, resume_from)
        self.n_params = sum(p.numel() for p in model.parameters())

    def generators(self) -> dict[str, torch.Generator]:
        return {"batches": self.batches}

    def describe(self) -> dict:
        config, data = self.config, self.data
        print(
            f"data: {len(data.train.features)} training, {len(data.test.features)} test "
            f"utterances, vocabulary {' '.join(data.vocab.words)}; model: bidirectional "
            f"{config.model.upper()}, {self.n_params:,} parameters",
            flush=True,
        )
        return {
            "train": dataclasses.asdict(config),
            "model": self.model_config.to_dict(),
            "features": FeatureConfig().to_dict(),
            "parameters": self.n_params,
            "data": {
                "train_utterances": len(data.train.features),
                "test_utterances": len(data.test.features),
                "vocabulary": list(data.vocab.words),
                "manifests_sha256": data.sha256,
                "feature_seconds": round(data.seconds, 2),
            },
        }

    def warm_up(self) -> str:
        test = self.data.test
        evaluate(self.model, Split(test.features[:1], test.labels[:1]), self.device)
        return dispatch.resolve("auto", self.device, torch.float32)

    def loss(self) -> Tensor:
        config, device = self.config, self.device
        n_train = len(self.data.train.features)
        indices = torch.randint(n_train, (config.batch,), generator=self.batches).tolist()
        features, lengths, targets, target_lengths = batch_of(self.data.train, indices)
        if config.spec_augment:
            features = spec_augment(features, lengths, self.batches)
        log_probs, steps = self.model(features.to(device), lengths.to(device))  # (T', B, V + 1)
        return self.ctc(log_probs, targets.to(device), steps, target_lengths.to(device))

    def postfix(self, loss: float) -> dict:
        return {"loss": f"{loss:.3f}", "s": f"{self.seconds:.0f}"}

    def evaluate(self) -> dict:
        wer, accuracy, _ = evaluate(self.model, self.data.test, self.device)
        wer_noisy, accuracy_noisy, _ = evaluate(self.model, self.data.test_noisy, self.device)
        loss_sum, steps = self.window
        return {
            "step": self.step,
            "train_loss": loss_sum / steps if steps else None,
            "wer": wer,
            "accuracy": accuracy,
            "wer_noisy": wer_noisy,
            "accuracy_noisy": accuracy_noisy,
            "train_seconds": self.seconds,
        }

    def announce(self, record: dict) -> str:
        loss = "-" if record["train_loss"] is None else f"{record['train_loss']:.4f}"
        return (
            f"step {record['step']} ({record['train_seconds']:.0f} s): loss {loss}, "
            f"WER {record['wer']:.2%} (strings {record['accuracy']:.1%}), "
            f"at {NOISY_SNR_DB:g} dB WER {record['wer_noisy']:.2%}"
        )

    def checkpoint_entries(self) -> dict:
        return {
            "model_config": self.model_config.to_dict(),
            "feature_config": FeatureConfig().to_dict(),
            "vocab": list(self.data.vocab.words),
            "data_sha256": self.data.sha256,
        }

    def result(self, last: dict) -> dict:
        return {
            "wer": last["wer"],
            "accuracy": last["accuracy"],
            "wer_noisy": last["wer_noisy"],
            "accuracy_noisy": last["accuracy_noisy"],
            "noisy_snr_db": NOISY_SNR_DB,
            "steps": self.step,
            "seconds": self.seconds,
            "stopped_by": "max_steps" if self.seconds < self.budget else "max_minutes",
            "model": self.config.model,
            "parameters": self.n_params,
            "load_average": list(os.getloadavg()),
            "params_sha256": checkpoint.params_sha256(self.model),
        }


def train(
    config: SpeechTrainConfig, data: Data, resume_from: dict | None = None, progress=None
) -> dict:
    """Run (or continue) training and return the result (also written to result.json).

    A SIGINT/SIGTERM stops it after the current step with a checkpoint to resume from; the
    result is then ``{"interrupted": signal name, "steps": ...}`` and result.json is not
    written. ``progress``: a tqdm bar (None: only on a terminal); each evaluation is printed.
    """
    return SpeechTrainer(config, data, resume_from).run(progress)
