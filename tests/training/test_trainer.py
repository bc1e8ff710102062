"""The trainer learns, is deterministic, and resumes bit for bit (budget stop and real SIGINT)."""

import json
import signal
import subprocess
import sys
import time

import pytest

from cellstate.tasks import StoppingCriterion
from cellstate.tasks.copy_memory import CopyTask
from cellstate.training.config import ModelConfig, RunConfig, TaskConfig, TrainingConfig
from cellstate.training.trainer import ResumeError, Trainer

TINY = dict(batch_size=8, eval_every=96, checkpoint_every=64, test_size=64)


def _config(max_sequences: int, **training) -> RunConfig:
    return RunConfig(
        TaskConfig("adding", 11),
        ModelConfig(hidden=4),
        TrainingConfig(**{**TINY, **training, "max_sequences": max_sequences}),
    )


def test_solves_an_easy_setting(tmp_path):
    """Temporal order at T = 10 (two symbols, 4 classes): the paper's ST3(0.1) within 8000."""
    config = RunConfig(
        TaskConfig("temporal-order", 10),
        ModelConfig(hidden=8),
        TrainingConfig(lr=0.05, batch_size=16, max_sequences=8000, eval_every=2000, test_size=256),
    )
    result = Trainer(config, tmp_path, progress=False).run()
    assert result.solved and result.stopped == "solved"
    assert result.sequences < 8000
    assert result.wrong <= 2
    losses = [json.loads(line)["train_loss"] for line in open(tmp_path / "metrics.jsonl")]
    assert losses[-1] < 0.2 * losses[0]


def test_same_seed_same_parameters():
    a = Trainer(_config(160), progress=False).run()
    b = Trainer(_config(160), progress=False).run()
    c = Trainer(_config(160, seed=1), progress=False).run()
    assert a.params_sha256 == b.params_sha256
    assert a.params_sha256 != c.params_sha256


def test_budget_stop_then_resume_equals_uninterrupted(tmp_path):
    whole = Trainer(_config(320), tmp_path / "whole", progress=False).run()
    first = Trainer(_config(100), tmp_path / "split", progress=False).run()
    assert first.stopped == "budget" and first.sequences == 104  # whole batches of 8
    resumed = Trainer(_config(320), tmp_path / "split", resume=True, progress=False).run()
    assert resumed.sequences == whole.sequences == 320
    assert resumed.params_sha256 == whole.params_sha256
    lines = [json.loads(line) for line in open(tmp_path / "split" / "metrics.jsonl")]
    expected = [json.loads(line) for line in open(tmp_path / "whole" / "metrics.jsonl")]
    assert [line["sequences"] for line in lines] == [line["sequences"] for line in expected]
    assert [line["train_loss"] for line in lines] == [line["train_loss"] for line in expected]


def test_resume_refuses_other_arguments(tmp_path):
    Trainer(_config(16), tmp_path, progress=False).run()
    with pytest.raises(ResumeError, match="training.lr"):
        Trainer(_config(32, lr=0.5), tmp_path, resume=True, progress=False)


def test_sigint_mid_run_then_resume_equals_uninterrupted(tmp_path):
    budget = 1600
    flags = ["--task", "adding", "--length", "11", "--hidden", "4", "--batch-size", "8"]
    flags += ["--eval-every", "96", "--checkpoint-every", "64", "--test-size", "64", "--quiet"]
    flags += ["--max-sequences", str(budget), "--out", str(tmp_path / "run")]
    command = [sys.executable, "-m", "cellstate.cli.main", "train", *flags]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    while not metrics.exists() and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted by SIGINT" in stdout and "--resume" in stdout
    assert "Traceback" not in stderr
    resumed = subprocess.run(
        [*command, "--resume"], capture_output=True, text=True, timeout=300, check=True
    )
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["sequences"] == budget, resumed.stdout
    whole = Trainer(_config(budget), progress=False).run()
    assert result["params_sha256"] == whole.params_sha256


def test_copy_logs_the_symbol_error_of_the_copied_part(tmp_path):
    config = RunConfig(
        TaskConfig("copy", 5),
        ModelConfig(hidden=4),
        TrainingConfig(**{**TINY, "max_sequences": 96}),
    )
    Trainer(config, tmp_path, progress=False).run()
    line = json.loads(open(tmp_path / "metrics.jsonl").readline())
    assert 0.5 < line["symbol_error"] <= 1.0  # an untrained model: about chance, 7/8
    Trainer(_config(96), tmp_path / "adding", progress=False).run()
    assert "symbol_error" not in json.loads(open(tmp_path / "adding" / "metrics.jsonl").readline())


@pytest.mark.parametrize("bound", [0.99, 1e-9])
def test_copy_stops_at_the_first_evaluation_with_its_symbol_error_below_the_bound(
    tmp_path, monkeypatch, bound
):
    # copy's criterion is "symbol error < 0.01"; an untrained model is near chance (7/8), so the
    # bound 0.99 holds at the first evaluation and 1e-9 never.
    criterion = StoppingCriterion("metric", beta=bound, metric="symbol_error")
    monkeypatch.setattr(CopyTask, "criterion", property(lambda self: criterion))
    config = RunConfig(
        TaskConfig("copy", 5),
        ModelConfig(hidden=4),
        TrainingConfig(**{**TINY, "max_sequences": 288}),
    )
    result = Trainer(config, tmp_path, progress=False).run()
    lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    if bound == 0.99:
        assert result.solved and result.stopped == "solved" and result.sequences == 96
        assert [line["sequences"] for line in lines] == [96] and lines[0]["symbol_error"] < 0.99
    else:
        assert not result.solved and result.stopped == "budget" and result.sequences == 288
