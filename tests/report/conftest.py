import contextlib
import io

import pytest

from cellstate.cli.main import main
from cellstate.report import html
from cellstate.training.config import ModelConfig, RunConfig, TaskConfig, TrainingConfig

# The report's clipping demo, shrunk: the same code path in a fraction of a second.
TINY_CLIPPING = RunConfig(
    TaskConfig("two-sequence", 12),
    ModelConfig(kind="rnn", hidden=4),
    TrainingConfig(
        optimizer="sgd", lr=0.1, clip=1.0, max_sequences=128, eval_every=64, test_size=256
    ),
)


@pytest.fixture(autouse=True)
def tiny_clipping(monkeypatch):
    monkeypatch.setattr(html, "CLIPPING_CONFIG", TINY_CLIPPING)


@pytest.fixture(scope="module")
def compare_dir(tmp_path_factory):
    """A small ``cellstate compare`` directory (which writes its report at the end), and what
    the command printed."""
    out = tmp_path_factory.mktemp("compare")
    argv = ["compare", "--lengths", "11,12", "--hidden", "4", "--max-sequences", "64"]
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(html, "CLIPPING_CONFIG", TINY_CLIPPING)
        assert main([*argv, "--test-size", "64", "--quiet", "--out", str(out)]) == 0
    return out, printed.getvalue()
