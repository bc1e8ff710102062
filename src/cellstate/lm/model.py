"""The character language model: embedding -> multi-layer LSTM -> linear head.

Shapes: T time, B batch, V vocabulary, E embedding, H hidden, L layers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import Tensor, nn

import cellstate
from cellstate.validation import integer, number, one_of

LSTM_KINDS = ("cellstate", "torch")
State = tuple[Tensor, Tensor]  # (h, c), each (L, B, H)


@dataclass(frozen=True)
class CharLMConfig:
    """The model's shape. ``lstm="torch"`` builds the same model on torch.nn.LSTM (the
    comparison baseline); both draw the same initial weights under the same seed."""

    vocab_size: int
    hidden: int = 256
    layers: int = 2
    embed: int = 64
    dropout: float = 0.0
    lstm: str = "cellstate"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden", "layers", "embed"):
            integer(name, getattr(self, name))
        number("dropout", self.dropout, at_least=0, below=1)
        one_of("lstm", self.lstm, LSTM_KINDS)

    def to_dict(self) -> dict:
        return asdict(self)


class CharLM(nn.Module):
    """Predicts each next character. Dropout (as in Zaremba et al. 2014) acts on the
    embedding, between LSTM layers and before the head."""

    def __init__(self, config: CharLMConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed)
        lstm = cellstate.LSTM if config.lstm == "cellstate" else nn.LSTM
        # nn.LSTM warns about dropout with one layer; there is nothing between layers to drop.
        between = config.dropout if config.layers > 1 else 0.0
        self.lstm = lstm(config.embed, config.hidden, config.layers, dropout=between)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.vocab_size)

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """tokens (T, B) int64 -> logits (T, B, V) and the final state ((L, B, H), (L, B, H))."""
        x = self.drop(self.embedding(tokens))  # (T, B, E)
        output, state = self.lstm(x, state)  # (T, B, H)
        return self.head(self.drop(output)), state  # (T, B, V)
