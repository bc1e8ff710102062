"""The recogniser: stacked log-mel frames -> bidirectional multi-layer cellstate.LSTM (or
plain tanh cellstate.RNN) -> linear layer -> per-frame log-probabilities over the CTC labels.

Shapes: T frames, T' = ceil(T / stack) stacked frames, B batch, M mel bands,
H hidden, V + 1 labels (blank included).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import cellstate
from cellstate.validation import integer, number, one_of

MODEL_KINDS = ("lstm", "rnn")


@dataclass(frozen=True)
class SpeechModelConfig:
    """``stack`` consecutive feature frames are concatenated into one step (fewer, wider
    steps: a 3x shorter recurrence for the same audio). ``layer_norm``, ``zoneout`` and
    ``forget_bias`` are LSTM variants (cellstate.LSTM's keywords); the RNN takes none."""

    labels: int
    mels: int = 40
    kind: str = "lstm"
    hidden: int = 128
    layers: int = 2
    stack: int = 3
    dropout: float = 0.0
    forget_bias: float = 1.0
    layer_norm: bool = False
    zoneout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("labels", "mels", "hidden", "layers", "stack"):
            integer(name, getattr(self, name))
        one_of("model", self.kind, MODEL_KINDS)
        for name in ("dropout", "zoneout"):
            number(name, getattr(self, name), at_least=0, below=1)
        number("forget_bias", self.forget_bias)
        lstm_only = {"layer_norm": False, "zoneout": 0.0, "forget_bias": 0.0}
        used = [n for n, off in lstm_only.items() if getattr(self, n) != off]
        if self.kind == "rnn" and used:
            raise ValueError(f"{', '.join(used)}: LSTM variants; the plain RNN has none")

    def to_dict(self) -> dict:
        return asdict(self)


class SpeechModel(nn.Module):
    """Per-frame CTC log-probabilities for padded feature batches."""

    def __init__(self, config: SpeechModelConfig) -> None:
        super().__init__()
        self.config = config
        size = config.mels * config.stack
        between = config.dropout if config.layers > 1 else 0.0
        if config.kind == "lstm":
            self.rnn = cellstate.LSTM(
                size,
                config.hidden,
                config.layers,
                dropout=between,
                bidirectional=True,
                forget_bias=config.forget_bias,
                layer_norm=config.layer_norm,
                zoneout=config.zoneout,
            )
        else:
            self.rnn = cellstate.RNN(
                size, config.hidden, config.layers, dropout=between, bidirectional=True
            )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(2 * config.hidden, config.labels)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Frames (B,) -> stacked steps (B,)."""
        return (lengths + self.config.stack - 1) // self.config.stack

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """features (T, B, M) zero-padded, lengths (B,) -> log_probs (T', B, V + 1), (B,)."""
        T, B, M = features.shape
        s = self.config.stack
        x = F.pad(features, (0, 0, 0, 0, 0, -T % s))  # (s T', B, M)
        x = x.view(-1, s, B, M).transpose(1, 2).reshape(-1, B, s * M)  # (T', B, s M)
        steps = self.output_lengths(lengths)
        packed = pack_padded_sequence(x, steps.cpu(), enforce_sorted=False)
        output, _ = self.rnn(packed)
        output, _ = pad_packed_sequence(output, total_length=x.shape[0])  # (T', B, 2H)
        return self.head(self.drop(output)).log_softmax(dim=-1), steps
