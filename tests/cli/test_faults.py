"""`cellstate train`, `compare` and `report` after faults: each answers with one line naming the
file or argument (exit 2), or recovers, and never mixes an old run into a new one."""

import errno
import json
import resource
import subprocess
import sys

import pytest
import torch

from cellstate.cli.main import main
from cellstate.kernels.cpu import build
from cellstate.training import checkpoint

TINY = ["--task", "adding", "--length", "11", "--hidden", "4", "--batch-size", "8"]
TINY += ["--test-size", "16", "--quiet"]


def _train(out, *flags) -> int:
    return main(["train", *TINY, "--out", str(out), *flags])


def _one_line_error(capsys, *needles) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_a_run_too_big_for_the_machine_is_refused_before_allocating(tmp_path):
    """The address space is capped at 8 GB, so that a regression fails here with a MemoryError
    rather than driving the machine into its OOM killer (this run once grew to 23.5 GB)."""
    cap = 8 << 30
    result = subprocess.run(
        [sys.executable, "-m", "cellstate.cli.main", "train", "--task", "adding"]
        + ["--length", "100000000", "--out", str(tmp_path / "run"), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)),
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for needle in ("needs ~", "GB for a training step", "GB available", "lower --length"):
        assert needle in result.stderr, result.stderr


def test_a_fresh_start_does_not_append_to_a_run_killed_before_its_first_checkpoint(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = [{"sequences": 1000 * (i + 1), "final": False} for i in range(18)]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stale))
    assert _train(out, "--max-sequences", "48", "--eval-every", "16") == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["sequences"] for line in lines] == [16, 32, 48]


@pytest.mark.filterwarnings("ignore:cellstate. backend='auto' uses the reference")
def test_a_resume_on_another_backend_says_so_and_the_checkpoint_records_it(
    tmp_path, capsys, monkeypatch
):
    """The first part runs on the reference (the kernel "cannot be built"), the resume on the
    kernel: not bit-exact, so it says so; the checkpoint lists both."""
    out = tmp_path / "run"
    build.load()
    with monkeypatch.context() as patch:
        patch.setattr(build, "_module", None)
        patch.setattr(build, "_failure", "a failure staged by the test")
        assert _train(out, "--max-sequences", "16") == 0
    assert checkpoint.load(out / "checkpoint.pt")["backends"] == ["reference"]
    capsys.readouterr()
    assert _train(out, "--max-sequences", "32", "--resume") == 0
    err = capsys.readouterr().err
    assert "resuming on the cpu backend, but the checkpoint's steps ran on reference" in err
    assert checkpoint.load(out / "checkpoint.pt")["backends"] == ["reference", "cpu"]


def test_ctrl_c_while_the_kernel_compiles_stops_train_in_one_line(tmp_path, capsys, monkeypatch):
    def interrupted():
        raise build.BuildInterrupted("SIGINT")

    monkeypatch.setattr(build, "_module", None)
    monkeypatch.setattr(build, "_failure", None)
    monkeypatch.setattr(build, "_build", interrupted)
    assert _train(tmp_path / "run", "--max-sequences", "16") == 130
    _one_line_error(capsys, "SIGINT while compiling the cellstate CPU kernel")


def test_compare_refuses_to_overwrite_an_earlier_comparison(tmp_path, capsys):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "compare.json").write_text('{"earlier": true}\n')
    argv = ["compare", "--lengths", "11", "--models", "lstm", "--hidden", "4"]
    argv += ["--max-sequences", "16", "--test-size", "16", "--quiet", "--out", str(out)]
    assert main(argv) == 2
    _one_line_error(capsys, str(out), "choose another --out")
    assert json.loads((out / "compare.json").read_text()) == {"earlier": True}


def test_a_full_disk_says_so_and_leaves_no_temporary_file(tmp_path, capsys, monkeypatch):
    """The disk is full when the checkpoint is synced (simulated: os.fsync raises ENOSPC)."""

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(checkpoint.os, "fsync", full)
        assert _train(out, "--max-sequences", "16") == 2
    _one_line_error(capsys, f"no space left on {out} (the checkpoint needs ~", "MB)")
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]
    assert _train(out, "--max-sequences", "16") == 0  # space again: the retry works


@pytest.mark.parametrize("where", ["file", "under_a_file"])
def test_out_that_is_a_file_or_unwritable_is_one_line(tmp_path, capsys, where):
    (tmp_path / "f").write_text("not a directory\n")
    out = tmp_path / "f" if where == "file" else tmp_path / "f" / "run"
    assert _train(out, "--max-sequences", "16") == 2
    _one_line_error(capsys, f"--out {out}")


def test_resume_drops_a_half_written_last_metrics_line(tmp_path):
    out = tmp_path / "run"
    assert _train(out, "--max-sequences", "32", "--eval-every", "16") == 0
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"sequences": 48, "train_loss": 0.1, "test_')  # the crash cut it here
    assert _train(out, "--max-sequences", "64", "--eval-every", "16", "--resume") == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["sequences"] for line in lines] == [16, 32, 48, 64]


def test_resume_names_a_metrics_file_that_is_not_json_lines(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, "--max-sequences", "32", "--eval-every", "16") == 0
    text = (out / "metrics.jsonl").read_text()
    (out / "metrics.jsonl").write_text("garbage\n" + text)
    assert _train(out, "--max-sequences", "64", "--eval-every", "16", "--resume") == 2
    _one_line_error(capsys, f"{out / 'metrics.jsonl'} line 1: expected a JSON object")


def test_train_resume_of_a_language_model_run_is_one_line(tmp_path, capsys):
    out = tmp_path / "lm"
    checkpoint.save_atomic({"kind": "cellstate-lm", "model": {}}, out / "checkpoint.pt")
    assert _train(out, "--resume") == 2
    _one_line_error(capsys, "is not a cellstate train checkpoint (it holds a cellstate-lm run)")


def test_a_loss_that_turns_nan_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--lr", "1e308", "--max-sequences", "400", "--checkpoint-every", "8"]
    assert _train(out, *flags) == 2
    _one_line_error(capsys, "the training loss became", f"{out / 'checkpoint.pt'}, is kept")
    kept = checkpoint.load(out / "checkpoint.pt")
    assert kept["counters"]["steps"] < 50 and kept["counters"]["stopped"] is None


@pytest.mark.parametrize("content", ["empty", "binary", "not_json"])
def test_report_on_a_directory_without_a_readable_run_is_one_line(tmp_path, capsys, content):
    run = tmp_path / "run"
    run.mkdir()
    if content != "empty":
        (run / "config.json").write_text("{}\n")
        metrics = b"\xff\xfe\x00binary" if content == "binary" else b'{"sequences": 1}\n{oops\n'
        (run / "metrics.jsonl").write_bytes(metrics)
    assert main(["report", str(run)]) == 2
    _one_line_error(capsys, str(run))
    assert not (run / "report.html").exists()


def test_checkpoint_save_removes_its_temporary_file_on_any_failure(tmp_path, monkeypatch):
    def broken(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(checkpoint.os, "fsync", broken)
    with pytest.raises(OSError, match="Input/output error"):
        checkpoint.save_atomic({"x": torch.zeros(3)}, tmp_path / "checkpoint.pt")
    assert list(tmp_path.iterdir()) == []
