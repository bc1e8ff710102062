"""Training the recogniser: CTC loss over random utterance batches, gradient-norm clipping,
Adam, optional SpecAugment; evaluation by greedy decoding on the held-out voices, clean and
at 10 dB SNR; atomic checkpoints and an exact resume.

Run directory: config.json, metrics.jsonl (one line per evaluation), checkpoint.pt,
result.json. Shapes: T frames, B batch, M mel bands, V + 1 labels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

import cellstate
from cellstate.kernels import dispatch
from cellstate.lm.train import _RunFiles
from cellstate.speech.audio import one_thread
from cellstate.speech.augment import spec_augment
from cellstate.speech.ctc import Vocabulary, greedy_decode, word_error_rate
from cellstate.speech.features import FeatureConfig, file_features
from cellstate.speech.manifest import read_manifest
from cellstate.speech.model import ModelConfig, SpeechModel
from cellstate.training import checkpoint, run_dir
from cellstate.training.divergence import check_loss
from cellstate.training.interrupt import GracefulStop
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
class TrainConfig:
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

    def model_config(self, labels: int) -> ModelConfig:
        return ModelConfig(
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


def load_data(config: TrainConfig, resume_from: dict | None = None, progress=None) -> Data:
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
    state = checkpoint.load(path)
    if state.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{path} is a cellstate checkpoint, but not a speech model's")
    return state


def build_model(state: dict) -> tuple[SpeechModel, Vocabulary, FeatureConfig]:
    """The model (in eval mode), vocabulary and feature settings of a speech checkpoint."""
    model = SpeechModel(ModelConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    return model.eval(), Vocabulary(state["vocab"]), FeatureConfig(**state["feature_config"])


def prepare(overrides: dict, resume: bool = False) -> tuple[TrainConfig, dict | None]:
    """The config to run (defaults <- ``overrides``) and the checkpoint to resume from (None:
    a fresh run). With ``resume`` the checkpoint's config replaces the defaults and an override
    that would change its numbers is an error; without it an existing checkpoint is an error."""
    files = _RunFiles(overrides.get("out", TrainConfig.out))
    if not resume:
        if files.checkpoint.exists():
            raise ValueError(
                f"{files.checkpoint} exists; pass --resume to continue it or choose another --out"
            )
        run_dir.check_writable(files.dir)
        return TrainConfig(**overrides), None
    state = load_speech_checkpoint(files.checkpoint)
    stored = TrainConfig(**state["train_config"])
    return stored.resumed({**overrides, "out": str(files.dir)}), state


def train(config: TrainConfig, data: Data, resume_from: dict | None = None, progress=None) -> dict:
    """Run (or continue) training and return the result (also written to result.json).

    A SIGINT/SIGTERM stops it after the current step with a checkpoint to resume from; the
    result is then ``{"interrupted": signal name, "steps": ...}`` and result.json is not
    written. ``progress``: a tqdm bar (None: only on a terminal); each evaluation is printed.
    """
    files = _RunFiles(config.out)
    device = config.device
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    batches = torch.Generator().manual_seed(config.seed)  # batch choice and masks
    model_config = config.model_config(len(data.vocab))
    model = SpeechModel(model_config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    ctc = torch.nn.CTCLoss(blank=0)
    step, seconds, window = 0, 0.0, [0.0, 0]  # window: loss sum, steps since the last eval
    if resume_from is not None:
        model.load_state_dict(resume_from["model"])
        optimizer.load_state_dict(resume_from["optimizer"])
        step, seconds, window = resume_from["step"], resume_from["seconds"], resume_from["window"]
        checkpoint.restore_rng_state(resume_from["rng"], {"batches": batches})
        files.drop_metrics_after(step)
    else:  # a fresh run: no curve or result of an earlier run in this directory
        run_dir.start_fresh(files.dir, (files.metrics.name, files.result.name))
    files.dir.mkdir(parents=True, exist_ok=True)
    n_params = sum(p.numel() for p in model.parameters())
    files.write_json(
        files.config,
        {
            "train": dataclasses.asdict(config),
            "model": model_config.to_dict(),
            "features": FeatureConfig().to_dict(),
            "parameters": n_params,
            "data": {
                "train_utterances": len(data.train.features),
                "test_utterances": len(data.test.features),
                "vocabulary": list(data.vocab.words),
                "manifests_sha256": data.sha256,
                "feature_seconds": round(data.seconds, 2),
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
        f"data: {len(data.train.features)} training, {len(data.test.features)} test utterances, "
        f"vocabulary {' '.join(data.vocab.words)}; model: bidirectional {config.model.upper()}, "
        f"{n_params:,} parameters",
        flush=True,
    )

    def save() -> None:
        checkpoint.save_atomic(
            {
                "kind": CHECKPOINT_KIND,
                "model_config": model_config.to_dict(),
                "feature_config": FeatureConfig().to_dict(),
                "vocab": list(data.vocab.words),
                "train_config": dataclasses.asdict(config),
                "data_sha256": data.sha256,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "seconds": seconds,
                "window": window,
                "rng": checkpoint.rng_state({"batches": batches}),
            },
            files.checkpoint,
        )

    def record() -> dict:
        wer, accuracy, _ = evaluate(model, data.test, device)
        wer_noisy, accuracy_noisy, _ = evaluate(model, data.test_noisy, device)
        entry = {
            "step": step,
            "train_loss": window[0] / window[1] if window[1] else None,
            "wer": wer,
            "accuracy": accuracy,
            "wer_noisy": wer_noisy,
            "accuracy_noisy": accuracy_noisy,
            "train_seconds": seconds,
        }
        files.log(entry)
        window[:] = [0.0, 0]
        loss = "-" if entry["train_loss"] is None else f"{entry['train_loss']:.4f}"
        tqdm.write(
            f"step {step} ({seconds:.0f} s): loss {loss}, WER {wer:.2%} "
            f"(strings {accuracy:.1%}), at {NOISY_SNR_DB:g} dB WER {wer_noisy:.2%}"
        )
        return entry

    # Build (or load) the recurrent kernel before the clock starts: compiling is not training.
    # In evaluation mode nothing draws random numbers, so an exact resume stays exact.
    evaluate(model, Split(data.test.features[:1], data.test.labels[:1]), device)
    budget = config.max_minutes * 60 if config.max_minutes is not None else math.inf
    last = None
    n_train = len(data.train.features)
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
            indices = torch.randint(n_train, (config.batch,), generator=batches).tolist()
            features, lengths, targets, target_lengths = batch_of(data.train, indices)
            if config.spec_augment:
                features = spec_augment(features, lengths, batches)
            log_probs, steps = model(features.to(device), lengths.to(device))  # (T', B, V + 1)
            loss = ctc(log_probs, targets.to(device), steps, target_lengths.to(device))
            advice = (
                f"lower --lr ({config.lr:g}); an infinite CTC loss also comes from a transcript "
                "with more words than its audio has steps"
            )
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
            bar.set_postfix(loss=f"{loss.item():.3f}", s=f"{seconds:.0f}", refresh=False)
            if step % config.eval_every == 0:
                last = record()
            if step % config.checkpoint_every == 0:
                save()
        save()
    if stop.requested:
        return {"interrupted": stop.signal_name, "steps": step}
    if last is None or last["step"] != step:
        last = record()
    result = {
        "wer": last["wer"],
        "accuracy": last["accuracy"],
        "wer_noisy": last["wer_noisy"],
        "accuracy_noisy": last["accuracy_noisy"],
        "noisy_snr_db": NOISY_SNR_DB,
        "steps": step,
        "seconds": seconds,
        "stopped_by": "max_steps" if seconds < budget else "max_minutes",
        "model": config.model,
        "parameters": n_params,
        "load_average": list(os.getloadavg()),
        "params_sha256": checkpoint.params_sha256(model),
    }
    files.write_json(files.result, result)
    return result
