"""``cellstate gradients``: the --json record, the plots, checkpoints and bad arguments."""

import json

import matplotlib.image

from cellstate.cli.main import main
from cellstate.training.config import ModelConfig, RunConfig, TaskConfig, TrainingConfig
from cellstate.training.trainer import Trainer


def test_json_shape_and_keys(tmp_path, capsys):
    assert (
        main(["gradients", "--length", "15", "--batch-size", "4", "--json", "--out", str(tmp_path)])
        == 0
    )
    record = json.loads(capsys.readouterr().out)
    K = 15  # adding's shortest sequence is T long
    assert record["lags"] == list(range(K))
    for key in ("rnn", "lstm", "lstm_c", "rnn_jacobian_norm"):
        assert len(record[key]) == K, key
    assert record["rnn"][0] == record["lstm"][0] == 1.0 and record["lstm_c"][0] == 0.0
    assert record["rnn_w_hh_sigma_max"] >= record["rnn_w_hh_spectral_radius"] > 0
    assert matplotlib.image.imread(tmp_path / "gradient_flow.png").shape[0] > 100
    assert json.loads((tmp_path / "gradients.json").read_text()) == record


def test_one_model_and_the_exploding_demo(tmp_path, capsys):
    args = ["gradients", "--model", "rnn", "--length", "12", "--batch-size", "4"]
    assert main([*args, "--explode", "2.5", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "rnn dL/dh" in out and "lstm" not in out and "spectral radius 2.5" in out
    assert (tmp_path / "exploding.png").is_file()
    record = json.loads((tmp_path / "gradients.json").read_text())
    assert set(record) >= {"rnn", "exploding"} and "lstm" not in record
    assert record["exploding"]["rnn"][-1] > 1


def test_a_trained_checkpoint_at_another_length(tmp_path, capsys):
    config = RunConfig(
        TaskConfig("adding", 12),
        ModelConfig(kind="lstm", hidden=4),
        TrainingConfig(max_sequences=32, eval_every=32, test_size=256),
    )
    Trainer(config, tmp_path / "run", progress=False).run()
    checkpoint = str(tmp_path / "run" / "checkpoint.pt")
    argv = ["gradients", "--checkpoint", checkpoint, "--length", "20", "--json"]
    assert main([*argv, "--out", str(tmp_path / "g")]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["models"] == "trained" and record["task"] == "adding T=20"
    assert len(record["lstm"]) == 20 and "rnn" not in record


def test_bad_arguments(tmp_path, capsys):
    assert main(["gradients", "--task", "copy", "--out", str(tmp_path)]) == 2
    assert "scored at every step" in capsys.readouterr().err
    assert main(["gradients", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
