"""`cellstate lm` after faults: a fresh start in a used directory, a torn metrics line, a bad
--out, a full disk, a loss that turns NaN, a temperature near 0. One line and exit 2, or a
recovery; never an old run mixed into a new one."""

import errno
import json

import pytest

from cellstate.cli.main import main
from cellstate.training import checkpoint
from tests.lm.conftest import TINY


def _train(text_file, out, *flags) -> int:
    return main(["lm", "train", "--text", str(text_file), "--out", str(out), *TINY, *flags])


def _one_line_error(capsys, *needles) -> None:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def _steps(out) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_fresh_start_does_not_append_to_a_run_killed_before_its_first_checkpoint(
    tmp_path, text_file
):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("".join(f'{{"step": {s}}}\n' for s in (3, 6, 9, 12)))
    assert _train(text_file, out, "--max-steps", "6") == 0
    assert _steps(out) == [3, 6]


def test_resume_drops_a_half_written_last_metrics_line(tmp_path, text_file):
    out = tmp_path / "run"
    assert _train(text_file, out, "--max-steps", "6") == 0
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 9, "val_b')  # the crash cut it here
    assert _train(text_file, out, "--max-steps", "9", "--resume") == 0
    assert _steps(out) == [3, 6, 9]


@pytest.mark.parametrize("where", ["file", "under_a_file"])
def test_out_that_is_a_file_or_unwritable_is_one_line(tmp_path, text_file, capsys, where):
    (tmp_path / "f").write_text("not a directory\n")
    out = tmp_path / "f" if where == "file" else tmp_path / "f" / "run"
    assert _train(text_file, out, "--max-steps", "3") == 2
    _one_line_error(capsys, f"--out {out}")


def test_a_full_disk_says_so_and_leaves_no_temporary_file(tmp_path, text_file, capsys, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "run"
    monkeypatch.setattr(checkpoint.os, "fsync", full)
    assert _train(text_file, out, "--max-steps", "3") == 2
    _one_line_error(capsys, f"no space left on {out} (the checkpoint needs ~")
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]


def test_a_loss_that_turns_nan_stops_the_run_and_keeps_the_last_checkpoint(
    tmp_path, text_file, capsys
):
    out = tmp_path / "run"
    flags = ["--lr", "1e308", "--max-steps", "40", "--checkpoint-every", "1"]
    assert _train(text_file, out, *flags) == 2
    _one_line_error(capsys, "the training loss became", f"{out / 'checkpoint.pt'}, is kept")
    assert checkpoint.load(out / "checkpoint.pt")["step"] < 40


def test_a_temperature_near_zero_samples_the_most_likely_characters(capsys, trained_run):
    """The limit of a vanishing temperature is the argmax: the same text for any seed."""
    texts = []
    for seed in ("0", "1"):
        argv = ["lm", "sample", "--checkpoint", str(trained_run / "checkpoint.pt")]
        argv += ["--length", "30", "--temperature", "1e-45", "--seed", seed]
        assert main(argv) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1] and len(texts[0]) > 30
