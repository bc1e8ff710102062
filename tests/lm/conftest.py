import pytest

from cellstate.cli.main import main

# A small, regular text: a tiny model learns something from it in a few steps.
WORDS = ("cat", "dog", "fox", "owl", "yak")
TEXT = "".join(f"the {w} {i % 7} jumps over {w[::-1]}.\n" for i, w in enumerate(WORDS * 24))
TINY = ["--hidden", "12", "--layers", "2", "--embed", "8", "--seq-len", "8", "--batch", "4"]
TINY += ["--eval-every", "3", "--eval-chars", "200", "--no-progress"]


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(TEXT)
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A tiny run trained for a few steps; its directory."""
    root = tmp_path_factory.mktemp("lm")
    (root / "text.txt").write_text(TEXT)
    out = root / "run"
    argv = ["lm", "train", "--text", str(root / "text.txt"), "--out", str(out), *TINY]
    assert main([*argv, "--max-steps", "40", "--lr", "0.02", "--dropout", "0.1"]) == 0
    return out
