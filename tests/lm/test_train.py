import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from cellstate.cli.main import main
from cellstate.lm.model import CharLM, CharLMConfig
from cellstate.lm.train import LMTrainConfig, bits_per_char, build_model, text_streams
from cellstate.training import checkpoint
from tests.lm.conftest import TINY


def _train(text_file, out, *flags):
    return main(["lm", "train", "--text", str(text_file), "--out", str(out), *TINY, *flags])


def test_text_streams_pair_each_character_with_the_next():
    ids = torch.arange(23)
    inputs, targets = text_streams(ids, batch=4)  # 22 predictions -> 4 streams of 5
    assert inputs.shape == targets.shape == (5, 4)
    assert inputs[:, 1].tolist() == [5, 6, 7, 8, 9]  # stream 1 is the 2nd contiguous slice
    assert torch.equal(targets, inputs + 1)


def test_an_untrained_uniform_model_scores_log2_of_the_vocabulary():
    model = CharLM(CharLMConfig(vocab_size=13, hidden=4, layers=1, embed=3))
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)
    bpc = bits_per_char(model, torch.randint(0, 13, (101,)), batch=3, seq_len=7)
    assert bpc == pytest.approx(math.log2(13), rel=1e-6)


def test_a_partial_evaluation_samples_the_whole_text():
    model = CharLM(CharLMConfig(vocab_size=2, hidden=4, layers=1, embed=3))
    torch.nn.init.zeros_(model.head.weight)
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([2.0, 0.0]))  # predicts 0 with p = sigmoid(2)
    ids = torch.cat([torch.zeros(100), torch.ones(101)]).long()  # 0s, then 1s
    bpc = bits_per_char(model, ids, batch=2, seq_len=5, max_chars=20)
    p0 = torch.sigmoid(torch.tensor(2.0)).item()
    # Two streams, one in each half: 10 zeros and 10 ones predicted, not 20 zeros.
    assert bpc == pytest.approx((-math.log2(p0) - math.log2(1 - p0)) / 2, rel=1e-5)


def test_a_tiny_run_writes_its_files(tmp_path, text_file, capsys):
    out = tmp_path / "run"
    assert _train(text_file, out, "--max-steps", "7", "--checkpoint-every", "5") == 0
    assert "validation" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["hidden"] == 12 and config["model"]["lstm"] == "cellstate"
    assert config["corpus"]["sources"] == [str(text_file)]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [3, 6, 7]
    assert all(0 < m["val_bpc"] < 8 for m in metrics)
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == 7 and result["val_bpc"] == metrics[-1]["val_bpc"]
    assert result["chars_per_second"] > 0
    state = checkpoint.load(out / "checkpoint.pt")
    assert state["step"] == 7
    model, vocab = build_model(state)  # sampling needs only the checkpoint
    assert len(vocab) == model.config.vocab_size
    assert checkpoint.params_sha256(model) == result["params_sha256"]


def test_the_torch_model_trains_too(tmp_path, text_file):
    assert _train(text_file, tmp_path / "run", "--max-steps", "2", "--model", "torch") == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["model"] == "torch" and result["steps"] == 2


def test_a_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path, text_file):
    # Dropout makes the RNG matter; the carried state matters at step 5; 360 characters give
    # 324 to train on, 10 chunks of 8 x 4, so the resumed part also starts a new pass.
    flags = ["--dropout", "0.2", "--checkpoint-every", "4", "--max-chars", "360"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert _train(text_file, whole, *flags, "--max-steps", "14") == 0
    assert _train(text_file, parts, *flags, "--max-steps", "5") == 0
    halfway = json.loads((parts / "result.json").read_text())["params_sha256"]
    assert _train(text_file, parts, "--resume", "--max-steps", "14") == 0
    expected = json.loads((whole / "result.json").read_text())
    got = json.loads((parts / "result.json").read_text())
    assert got["params_sha256"] == expected["params_sha256"] != halfway
    assert got["val_bpc"] == expected["val_bpc"]
    final = checkpoint.load(parts / "checkpoint.pt")
    assert (
        final["step"] == 14
        and checkpoint.params_sha256(build_model(final)[0]) == got["params_sha256"]
    )


def test_resume_keeps_the_checkpoint_config_and_refuses_changes(tmp_path, text_file, capsys):
    out = tmp_path / "run"
    assert _train(text_file, out, "--max-steps", "2") == 0
    capsys.readouterr()
    argv = ["lm", "train", "--out", str(out), "--resume", "--no-progress"]
    assert main([*argv, "--hidden", "16"]) == 2
    assert "--resume: hidden is 12 in the checkpoint, not 16" in capsys.readouterr().err
    assert main([*argv, "--max-steps", "3"]) == 0  # the text and sizes come from the checkpoint
    assert json.loads((out / "result.json").read_text())["steps"] == 3


def test_resume_refuses_a_changed_text(tmp_path, text_file, capsys):
    out = tmp_path / "run"
    assert _train(text_file, out, "--max-steps", "1") == 0
    text_file.write_text(text_file.read_text().upper())
    assert _train(text_file, out, "--resume", "--max-steps", "2") == 2
    assert "the text differs" in capsys.readouterr().err


def test_sigterm_writes_a_checkpoint_that_resumes(tmp_path, text_file):
    out = tmp_path / "run"
    argv = ["lm", "train", "--text", str(text_file), "--out", str(out), *TINY]
    argv += ["--max-steps", "100000", "--checkpoint-every", "100000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cellstate.cli.main", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300  # a guard against a hang (a first run may compile)
    while not (out / "metrics.jsonl").exists():  # training has begun
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    step = checkpoint.load(out / "checkpoint.pt")["step"]
    assert step >= 3
    assert main(["lm", "train", "--out", str(out), "--resume", "--max-steps", str(step + 1)]) == 0
    assert json.loads((out / "result.json").read_text())["steps"] == step + 1


def test_train_config_validates_sizes():
    with pytest.raises(ValueError, match="seq_len must be a positive integer"):
        LMTrainConfig(seq_len=0)
    with pytest.raises(ValueError, match="max_minutes must be a positive number"):
        LMTrainConfig(max_minutes=-1.0)


def test_device_cuda_without_cuda_is_one_line_and_exit_2(tmp_path, text_file, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a GPU machine
    out = tmp_path / "run"
    assert _train(text_file, out, "--max-steps", "2", "--device", "cuda") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cellstate lm train: error: --device cuda:") and "\n" not in err
    assert "sees no CUDA device; use --device cpu" in err
    assert not (out / "checkpoint.pt").exists()
    assert _train(text_file, out, "--max-steps", "2", "--device", "tpu") == 2
    assert "--device must be cpu or cuda[:N]; got 'tpu'" in capsys.readouterr().err


def test_the_checkpoint_and_result_record_the_device(tmp_path, text_file):
    out = tmp_path / "run"
    assert _train(text_file, out, "--max-steps", "2", "--device", "cpu") == 0
    state = checkpoint.load(out / "checkpoint.pt")
    assert state["devices"] == ["cpu"] and state["backends"] == ["cpu"]
    assert state["train_config"]["device"] == "cpu"
    assert json.loads((out / "result.json").read_text())["device"] == "cpu"
