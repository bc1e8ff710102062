"""`cellstate train`: the run directory's files, result.json's keys, bad arguments -> exit 2."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cellstate.cli.main import build_parser, main
from cellstate.cli.train import config_from_args, default_run_dir

TINY = ["--length", "11", "--hidden", "4", "--batch-size", "8", "--test-size", "64", "--quiet"]
RESULT_KEYS = {
    "task",
    "length",
    "model",
    "solved",
    "sequences",
    "test_error",
    "wrong",
    "seconds",
    "params_sha256",
}


@pytest.mark.parametrize("model", ["lstm", "rnn"])
def test_train_writes_the_run_files(tmp_path, capsys, model):
    out = tmp_path / "run"
    argv = ["train", "--task", "adding", "--model", model, *TINY, "--max-sequences", "48"]
    assert main([*argv, "--eval-every", "16", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.pt",
        "config.json",
        "metrics.jsonl",
        "result.json",
    ]
    result = json.loads((out / "result.json").read_text())
    assert RESULT_KEYS <= set(result)
    assert (result["task"], result["length"], result["model"]) == ("adding", 11, model)
    assert result["sequences"] == 48 and result["solved"] is False
    assert 0 <= result["wrong"] <= 64 and result["test_error"] == result["wrong"] / 64
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["kind"] == model and config["training"]["max_sequences"] == 48
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["sequences"] for line in lines] == [16, 32, 48]
    assert "adding T=11" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--task", "nope"], "task.name must be one of adding"),
        (["--length", "-3"], "task.length"),
        (["--hidden", "0"], "model.hidden"),
        (["--lr", "-1"], "training.lr"),
        (["--clip", "-0.5"], "training.clip"),
        (["--model", "rnn", "--init", "chrono"], "model.init"),
        (["--task", "reber", "--length", "5"], "takes no length"),
        (["--task", "two-sequence", "--informative", "0"], "task.n_informative"),
        (["--task", "adding", "--informative", "1"], "only the two-sequence tasks"),
        (["--task", "two-sequence-3c", "--length", "3"], "task.length"),
        (["--resume"], "no checkpoint"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, flags, message):
    assert main(["train", *flags, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_bad_arguments_from_the_shell_have_no_traceback(tmp_path):
    command = [sys.executable, "-m", "cellstate.cli.main", "train", "--length", "-5"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "task.length" in done.stderr and "Traceback" not in done.stderr


def test_refuses_to_overwrite_a_run_without_resume_or_force(tmp_path, capsys):
    argv = ["train", *TINY, "--max-sequences", "8", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert main(argv) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0
    assert main([*argv[:-2], "--lr", "0.5", "--out", str(tmp_path), "--resume"]) == 2
    assert "training.lr" in capsys.readouterr().err


@pytest.mark.parametrize("task", ["two-sequence", "two-sequence-3b", "two-sequence-3c"])
def test_informative_flag_reaches_the_task_and_the_run_resumes(tmp_path, capsys, task):
    small = ["--length", "11", "--hidden", "4", "--batch-size", "8", "--eval-every", "16"]
    argv = [
        "train",
        "--task",
        task,
        "--informative",
        "1",
        *small,
        "--quiet",
        "--out",
        str(tmp_path),
    ]
    assert main([*argv, "--max-sequences", "16"]) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["task"] == {"name": task, "length": 11, "n_informative": 1}
    assert main([*argv, "--max-sequences", "32", "--resume"]) == 0
    assert json.loads((tmp_path / "result.json").read_text())["sequences"] == 32
    assert main([*argv[:4], "3", *argv[5:], "--max-sequences", "48", "--resume"]) == 2
    assert "task.n_informative" in capsys.readouterr().err


def test_the_learning_grids_copy_cells_train_with_copys_defaults(tmp_path):
    """benchmarks/learning.py passes no model or lr flags, so its copy cells get hidden 128 and
    the lr decay (TASK_DEFAULTS), the settings RESULTS.md's copy runs were measured with; T = 1000
    runs at batch 16 (its row's command), T = 100 at the default 32."""
    path = Path(__file__).parents[2] / "benchmarks" / "learning.py"
    spec = importlib.util.spec_from_file_location("learning_grid", path)
    learning = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(learning)
    for cell, batch_size in (("copy-100", 32), ("copy-1000", 16)):
        argv = learning.command(cell, 1, tmp_path, [])
        args = build_parser().parse_args(argv[argv.index("train") :])
        config = config_from_args(args)
        training = config.training
        assert (config.model.hidden, training.lr, training.lr_decay, training.batch_size) == (
            128,
            0.01,
            0.3,
            batch_size,
        )


def test_the_default_run_folder_names_a_non_default_n():
    def folder(*flags):
        return default_run_dir(config_from_args(build_parser().parse_args(["train", *flags])))

    assert folder("--task", "adding", "--length", "100") == "runs/train-adding-100-lstm-s0"
    assert folder("--task", "two-sequence") == "runs/train-two-sequence-100-lstm-s0"
    assert folder("--task", "two-sequence", "--informative", "3") == folder(
        "--task", "two-sequence"
    )
    assert folder("--task", "two-sequence-3b", "--informative", "1", "--seed", "2") == (
        "runs/train-two-sequence-3b-100-n1-lstm-s2"
    )
