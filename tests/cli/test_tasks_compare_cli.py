"""`cellstate tasks` lists every task; `cellstate compare` writes compare.json and the plot."""

import json

import pytest
import torch

from cellstate.cli.main import main
from cellstate.tasks import TASKS


def test_tasks_lists_one_line_per_task(capsys):
    assert main(["tasks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(TASKS)
    adding = lines[list(TASKS).index("adding")]
    assert "T, default 100" in adding and "T=1000: 853,000" in adding
    assert "no length" in lines[list(TASKS).index("reber")]


def test_compare_writes_json_and_plot(tmp_path, capsys):
    argv = ["compare", "--lengths", "11,12", "--hidden", "4", "--max-sequences", "32"]
    assert main([*argv, "--test-size", "64", "--quiet", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "compare.json").read_text())
    assert data["task"] == "adding" and data["lengths"] == [11, 12]
    runs = [(r["config"]["model"]["kind"], r["result"]["length"]) for r in data["runs"]]
    assert runs == [("rnn", 11), ("lstm", 11), ("rnn", 12), ("lstm", 12)]
    assert all(r["result"]["sequences"] == 32 for r in data["runs"])
    assert (tmp_path / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "length  model  solved  sequences" in out and "lstm" in out


def test_compare_bad_lengths_exit_2(tmp_path, capsys):
    assert main(["compare", "--lengths", "ten", "--out", str(tmp_path)]) == 2
    assert "--lengths" in capsys.readouterr().err


def test_compare_device_reaches_the_training_config(tmp_path, capsys):
    """--device cuda is passed on (and refused here, with the config's reason, without CUDA)."""
    argv = ["compare", "--lengths", "11", "--device", "cuda", "--out", str(tmp_path)]
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: this checks the refusal without one")
    assert main(argv) == 2
    assert "cuda was asked for but torch sees no CUDA device" in capsys.readouterr().err
