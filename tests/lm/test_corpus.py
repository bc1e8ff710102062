import sysconfig
from pathlib import Path

import pytest
import torch

from cellstate.lm.corpus import (
    CorpusError,
    Vocabulary,
    load_corpus,
    read_text,
    split,
    stdlib_sources,
)


def test_stdlib_sources_are_sorted_and_leave_out_tests_and_site_packages():
    root = Path(sysconfig.get_paths()["stdlib"])
    files = stdlib_sources()
    assert files, "the interpreter has no stdlib sources?"
    relative = [f.relative_to(root).as_posix() for f in files]
    assert relative == sorted(relative)
    assert all(f.suffix == ".py" for f in files)
    for path in relative:
        dirs = path.split("/")[:-1]
        assert not {"test", "tests", "idle_test", "site-packages", "dist-packages"} & set(dirs)


def test_default_corpus_is_deterministic_and_capped():
    first = load_corpus(max_chars=50_000)
    second = load_corpus(max_chars=50_000)
    assert first == second
    assert len(first.text) == 50_000
    assert list(first.sources) == [str(p) for p in stdlib_sources()[: len(first.sources)]]


def test_given_files_are_concatenated_with_unix_newlines(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_bytes(b"one\r\ntwo")
    b.write_text("three\n")
    corpus = load_corpus([a, b])
    assert corpus.text == "one\ntwo\nthree\n"
    assert corpus.sources == (str(a), str(b))
    assert load_corpus([a, b], max_chars=5).text == "one\nt"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "text file not found"),
        (b"", "text file is empty"),
        (b" \n\t\n", "text file is empty"),
        (b"abc\x00def", "not a UTF-8 text file"),
        ("caf\u00e9".encode("latin-1"), "not a UTF-8 text file"),
    ],
)
def test_bad_text_files_are_refused(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CorpusError, match=message):
        read_text(path)
    with pytest.raises(CorpusError, match=message):
        load_corpus([path])


def test_a_directory_is_not_a_text(tmp_path):
    with pytest.raises(CorpusError, match="not a file"):
        read_text(tmp_path)


def test_max_chars_must_be_positive(tmp_path):
    with pytest.raises(CorpusError, match="max_chars must be positive"):
        load_corpus(max_chars=0)


def test_split_is_deterministic_complete_and_spread_out():
    text = "".join(chr(ord("a") + i % 26) * 1000 for i in range(400))  # 400k characters
    train, validation = split(text)
    assert (train, validation) == split(text)
    assert len(train) + len(validation) == len(text)
    # 40 blocks of 10k characters; every 10th, from the start to the end, is validation.
    assert validation == "".join(text[k * 10_000 : (k + 1) * 10_000] for k in (0, 10, 20, 30))


def test_split_of_a_tiny_text_and_too_short_a_text():
    train, validation = split("x" * 25)
    assert validation and train and len(train) + len(validation) == 25
    with pytest.raises(CorpusError, match="too short"):
        split("short")


def test_vocabulary_round_trip_and_unknown_characters():
    vocab = Vocabulary.from_text("hello world")
    assert vocab.chars == " dehlorw"
    ids = vocab.encode("hello")
    assert ids.dtype == torch.long and ids.tolist() == [3, 2, 4, 4, 5]
    assert vocab.decode(ids) == "hello"
    with pytest.raises(ValueError, match=r"not in the model's vocabulary: 'H' 'x'"):
        vocab.encode("Hex")
