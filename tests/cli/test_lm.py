"""`cellstate lm`: every bad input gives exit code 2 and one line on stderr naming the problem,
never a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cellstate.cli.main import main
from cellstate.training import checkpoint
from tests.lm.conftest import TINY


def _one_line_error(capsys, code: int, message: str) -> None:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("cellstate lm "), err
    assert message in err


@pytest.mark.parametrize(
    ("content", "flags", "message"),
    [
        (None, [], "text file not found"),
        (b"", [], "text file is empty"),
        (b"\x7fELF\x02\x01\x01\x00\x00", [], "not a UTF-8 text file"),
        (b"\xff\xfe\xfa text", [], "not a UTF-8 text file"),
        ("text", ["--hidden", "0"], "hidden must be a positive integer; got 0"),
        ("text", ["--layers", "-1"], "layers must be a positive integer"),
        ("text", ["--embed", "0"], "embed must be a positive integer"),
        ("text", ["--seq-len", "0"], "seq_len must be a positive integer"),
        ("text", ["--batch", "-4"], "batch must be a positive integer"),
        ("text", ["--max-steps", "0"], "max_steps must be a positive integer"),
        ("text", ["--max-minutes", "0"], "max_minutes must be a positive number"),
        ("text", ["--max-chars", "0"], "max_chars must be a positive integer"),
        ("text", ["--eval-every", "0"], "eval_every must be a positive integer"),
        ("text", ["--lr", "-0.1"], "lr must be a positive number"),
        ("text", ["--dropout", "1"], "dropout must be in [0, 1)"),
        ("text", ["--model", "gru"], "model must be one of cellstate, torch"),
        ("text", ["--seq-len", "5000"], "too short for batch 4 x seq_len 5000"),
    ],
)
def test_train_refuses_bad_input(tmp_path, capsys, content, flags, message):
    path = tmp_path / "text.txt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "text":
        path.write_text("some perfectly good text\n" * 40)
    argv = ["lm", "train", "--text", str(path), "--out", str(tmp_path / "run"), *TINY]
    _one_line_error(capsys, main([*argv, *flags]), message)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_train_resume_needs_a_checkpoint(tmp_path, capsys):
    code = main(["lm", "train", "--out", str(tmp_path / "none"), "--resume"])
    _one_line_error(capsys, code, "no checkpoint at")


def test_train_will_not_overwrite_a_run(tmp_path, capsys, trained_run):
    code = main(["lm", "train", "--out", str(trained_run), "--max-steps", "1"])
    _one_line_error(capsys, code, "exists; pass --resume to continue it or choose another --out")


def _foreign_checkpoints(tmp_path) -> dict[str, Path]:
    text, plain, other = tmp_path / "a.txt", tmp_path / "plain.pt", tmp_path / "other.pt"
    text.write_text("not a checkpoint")
    torch.save({"weights": torch.zeros(2)}, plain)
    checkpoint.save_atomic({"kind": "something-else"}, other)
    return {
        "is not a readable cellstate checkpoint": text,
        "is not a cellstate checkpoint": plain,
        "is a cellstate checkpoint, but not a language model's": other,
        "no checkpoint at": tmp_path / "missing.pt",
    }


def test_sample_refuses_missing_and_foreign_checkpoints(tmp_path, capsys):
    for message, path in _foreign_checkpoints(tmp_path).items():
        _one_line_error(capsys, main(["lm", "sample", "--checkpoint", str(path)]), message)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--prompt", "the \u20ac"], "characters not in the model's vocabulary: '\u20ac'"),
        (["--prompt", ""], "the prompt is empty"),
        (["--length", "0"], "length must be a positive integer"),
        (["--temperature", "0"], "temperature must be a positive number"),
        (["--temperature", "-2"], "temperature must be a positive number"),
    ],
)
def test_sample_refuses_bad_arguments(capsys, trained_run, flags, message):
    argv = ["lm", "sample", "--checkpoint", str(trained_run / "checkpoint.pt"), *flags]
    _one_line_error(capsys, main(argv), message)


def test_sample_prints_the_prompt_and_its_continuation(capsys, trained_run):
    argv = ["lm", "sample", "--checkpoint", str(trained_run / "checkpoint.pt"), "--length", "25"]
    assert main([*argv, "--prompt", "the dog", "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("the dog") and len(first) == len("the dog") + 25 + 1
    assert main([*argv, "--prompt", "the dog", "--seed", "3"]) == 0
    assert capsys.readouterr().out == first


def test_a_real_process_reports_a_bad_checkpoint_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    script = Path(sys.executable).with_name("cellstate")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "cellstate.cli.main"]
    proc = subprocess.run(
        [*command, "lm", "sample", "--checkpoint", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "is not a readable cellstate checkpoint" in proc.stderr
