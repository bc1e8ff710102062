"""Text for the character model: loading and validating it, its vocabulary, and a deterministic
train/validation split.

The default corpus is the Python standard library's own ``.py`` sources on the running interpreter:
every machine that runs cellstate has it, so training needs no download.
"""

from __future__ import annotations

import math
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

DEFAULT_MAX_CHARS = 4_000_000
# Tests, vendored packages and IDLE's test suite are not "the standard library's own code", and
# tests would swamp it (Lib/test alone is about half of the .py bytes).
EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test"})
VALIDATION_PERIOD = 10  # every 10th block of the text is validation: 10%, spread over the corpus
MAX_BLOCK_CHARS = 65_536


class CorpusError(ValueError):
    """A text that cannot be trained on (missing, empty, binary, too short)."""


@dataclass(frozen=True)
class Corpus:
    """The text to train on and where it came from (paths, in the order concatenated)."""

    text: str
    sources: tuple[str, ...]


def stdlib_sources(root: str | Path | None = None) -> list[Path]:
    """The standard library's .py files, sorted by relative path (tests and site-packages out)."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    files = []
    for path in root.rglob("*.py"):
        relative = path.relative_to(root)
        if EXCLUDED_DIRS.isdisjoint(relative.parts[:-1]) and path.is_file():
            files.append(relative)
    return [root / relative for relative in sorted(files, key=lambda p: p.as_posix())]


def _decode(data: bytes) -> str:
    """UTF-8 text with Windows line endings made Unix ones (ValueError for binary data)."""
    if b"\x00" in data:  # UTF-8 text never holds NUL; binaries almost always do
        raise ValueError("NUL byte")
    return data.decode("utf-8-sig").replace("\r\n", "\n")


def read_text(path: str | Path) -> str:
    """One text file, validated: it must exist, be non-empty and be UTF-8 text."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"text file not found: {path}")
    if not path.is_file():
        raise CorpusError(f"not a file: {path}")
    data = path.read_bytes()
    if not data.strip():
        raise CorpusError(f"text file is empty: {path}")
    try:
        return _decode(data)
    except ValueError:
        raise CorpusError(f"not a UTF-8 text file (binary?): {path}") from None


def load_corpus(paths: Sequence[str | Path] = (), max_chars: int = DEFAULT_MAX_CHARS) -> Corpus:
    """The given text files (all validated), or the standard library's sources, concatenated
    in order and cut at ``max_chars`` characters."""
    if max_chars <= 0:
        raise CorpusError(f"max_chars must be positive; got {max_chars}")
    if paths:
        texts = [(str(p), read_text(p)) for p in paths]
    else:
        texts = []
        for path in stdlib_sources():
            try:
                texts.append((str(path), _decode(path.read_bytes())))
            except ValueError:  # a few stdlib files are Latin-1 on purpose; skip them
                continue
            if sum(len(t) for _, t in texts) >= max_chars:
                break
        if not texts:
            raise CorpusError("found no standard-library sources to train on; pass --text")
    parts, total, sources = [], 0, []
    for source, text in texts:
        if total >= max_chars:
            break
        text = text if text.endswith("\n") else text + "\n"
        parts.append(text[: max_chars - total])
        total += len(parts[-1])
        sources.append(source)
    return Corpus("".join(parts), tuple(sources))


class Vocabulary:
    """The characters of a text, sorted; a character's id is its index."""

    def __init__(self, chars: str) -> None:
        if not chars or len(set(chars)) != len(chars):
            raise ValueError("a vocabulary needs at least one character, each once")
        self.chars = chars
        self._index = {ch: i for i, ch in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, ch: str) -> bool:
        return ch in self._index

    def encode(self, text: str) -> Tensor:
        """(N,) int64 ids (ValueError naming the characters the vocabulary lacks)."""
        unknown = sorted(set(text) - self._index.keys())
        if unknown:
            shown = " ".join(repr(ch) for ch in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise ValueError(f"characters not in the model's vocabulary: {shown}{more}")
        return torch.tensor([self._index[ch] for ch in text], dtype=torch.long)

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def split(text: str) -> tuple[str, str]:
    """(train, validation): the text cut into equal blocks, every 10th one validation.

    Blocks (at most 64 Ki characters, at least ~4 of them for validation) spread the
    validation text over the whole corpus instead of taking only its last files.
    """
    if len(text) < 2 * VALIDATION_PERIOD:
        raise CorpusError(f"the text is too short to split ({len(text)} characters)")
    block = min(MAX_BLOCK_CHARS, math.ceil(len(text) / (4 * VALIDATION_PERIOD)))
    blocks = [text[i : i + block] for i in range(0, len(text), block)]
    train = "".join(b for k, b in enumerate(blocks) if k % VALIDATION_PERIOD != 0)
    validation = "".join(b for k, b in enumerate(blocks) if k % VALIDATION_PERIOD == 0)
    return train, validation
