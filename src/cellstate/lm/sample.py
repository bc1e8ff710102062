"""Sampling text from a trained character model, one character at a time.

Shapes: T time, B batch (1 here), V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cellstate.lm.corpus import Vocabulary
from cellstate.lm.model import CharLM
from cellstate.validation import integer, number


@dataclass(frozen=True)
class SampleConfig:
    """What to sample; ``prompt`` None: see :func:`start_text`."""

    prompt: str | None = None
    length: int = 500
    temperature: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        integer("length", self.length)
        number("temperature", self.temperature, above=0)
        if self.prompt == "":
            raise ValueError("the prompt is empty; leave it out to start after a newline")


def start_text(vocab: Vocabulary, prompt: str | None) -> str:
    """What the model reads before it writes: the prompt, or by default a newline (or, without
    one in the vocabulary, its first character). ValueError for characters outside it."""
    text = prompt if prompt is not None else "\n" if "\n" in vocab else vocab.chars[0]
    vocab.encode(text)
    return text


@torch.no_grad()
def sample(model: CharLM, vocab: Vocabulary, config: SampleConfig) -> str:
    """The continuation of the prompt (not including it); the same for the same seed."""
    ids = vocab.encode(start_text(vocab, config.prompt))  # (T,)
    generator = torch.Generator().manual_seed(config.seed)
    model.eval()
    logits, state = model(ids.view(-1, 1))  # (T, 1, V): the prompt in one call
    out = []
    for _ in range(config.length):
        # Shifted so that the largest logit is 0: a tiny temperature then tends to the argmax
        # (the others' exp underflows to 0) instead of dividing into inf - inf = NaN.
        last = logits[-1, 0]  # (V,)
        probs = torch.softmax((last - last.max()) / config.temperature, dim=-1)  # (V,)
        next_id = torch.multinomial(probs, 1, generator=generator)  # (1,)
        out.append(int(next_id))
        logits, state = model(next_id.view(1, 1), state)  # (1, 1, V)
    return vocab.decode(out)
