import math

import pytest
import torch

from cellstate.speech.ctc import Vocabulary, edit_distance, greedy_decode, word_error_rate


def _frames(paths: list[list[int]], labels: int = 4) -> torch.Tensor:
    """Log-probabilities (T, B, labels) whose best label per frame is the given path."""
    T = max(len(p) for p in paths)
    x = torch.full((T, len(paths), labels), math.log(0.1))
    for b, path in enumerate(paths):
        for t, label in enumerate(path):
            x[t, b, label] = math.log(0.7)
    return x


def test_greedy_decoding_merges_repeats_and_drops_blanks():
    paths = [
        [0, 1, 1, 0, 1, 2, 2, 0],  # a blank between equal labels keeps both
        [3, 3, 3, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
        [2, 0, 2, 2, 1, 3, 1, 1],
    ]
    lengths = torch.tensor([8, 8, 8, 3])  # the last one's frames after 3 are padding
    assert greedy_decode(_frames(paths), lengths) == [[1, 1, 2], [3], [], [2, 2]]


def test_word_error_rate_counts_substitutions_deletions_insertions():
    assert edit_distance("one two three".split(), "one too three".split()) == 1
    assert edit_distance([1, 2, 3], []) == 3
    assert edit_distance([], [4, 5]) == 2
    refs = [[1, 2, 3, 4], [5, 6]]
    hyps = [[1, 3, 4, 9], [5, 6]]  # a deletion and an insertion in 6 words
    assert word_error_rate(refs, hyps) == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="references"):
        word_error_rate([[1]], [])


def test_the_vocabulary_names_an_unknown_word():
    vocab = Vocabulary(["two", "one", "one"])
    assert len(vocab) == 3 and vocab.encode(["one", "two"]) == [1, 2]
    assert vocab.decode([2, 1]) == ["two", "one"]
    with pytest.raises(ValueError, match=r"x.wav: word\(s\) three not in the training"):
        vocab.encode(["one", "three"], "x.wav")
