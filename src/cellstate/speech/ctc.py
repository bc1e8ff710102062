"""CTC labels, greedy decoding and the word error rate.

Label 0 is the CTC blank; labels 1..V are the words of the vocabulary (the recogniser
transcribes whole words, which suits small-vocabulary tasks such as connected digits).
Shapes: T frames, B batch, V + 1 labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import Tensor

BLANK = 0


class Vocabulary:
    """Words <-> labels 1..V (0 is the blank)."""

    def __init__(self, words: Iterable[str]) -> None:
        self.words = tuple(sorted(set(words)))
        if not self.words:
            raise ValueError("a vocabulary needs at least one word")
        self._label = {w: i + 1 for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        """Labels including the blank."""
        return len(self.words) + 1

    def encode(self, words: Sequence[str], where: str = "") -> list[int]:
        unknown = sorted({w for w in words if w not in self._label})
        if unknown:
            raise ValueError(
                f"{where or 'transcript'}: word(s) {', '.join(unknown)} not in the training "
                f"vocabulary ({' '.join(self.words)})"
            )
        return [self._label[w] for w in words]

    def decode(self, labels: Iterable[int]) -> list[str]:
        return [self.words[label - 1] for label in labels]


def greedy_decode(log_probs: Tensor, lengths: Tensor) -> list[list[int]]:
    """Best path decoding: the most likely label per frame, repeats merged, blanks removed.

    log_probs (T, B, V + 1), lengths (B,) valid frames -> B label lists.
    """
    best = log_probs.argmax(dim=-1).t().tolist()  # (B, T)
    decoded = []
    for path, length in zip(best, lengths.tolist(), strict=True):
        labels, previous = [], BLANK
        for label in path[:length]:
            if label != previous and label != BLANK:
                labels.append(label)
            previous = label
        decoded.append(labels)
    return decoded


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """Levenshtein distance: the fewest substitutions, deletions and insertions."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, start=1):
        current = [i]
        for j, hyp in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def word_error_rate(references: Sequence[Sequence], hypotheses: Sequence[Sequence]) -> float:
    """Total edit distance over total reference words (corpus WER, can exceed 1)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    words = sum(len(r) for r in references)
    if words == 0:
        raise ValueError("the references hold no words")
    errors = sum(edit_distance(r, h) for r, h in zip(references, hypotheses, strict=True))
    return errors / words
