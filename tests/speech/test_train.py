import json

import pytest

from cellstate.cli.main import main
from cellstate.report.html import write_report
from tests.speech.conftest import TINY


def _train(corpus, out, *flags):
    return main(["speech", "train", "--data", str(corpus), "--out", str(out), *TINY, *flags])


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_checkpoint_resume_bit_exactly_and_transcribe(tone_corpus, tmp_path, capsys):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert _train(tone_corpus, straight, "--max-steps", "12") == 0
    result = json.loads((straight / "result.json").read_text())
    assert result["steps"] == 12 and result["stopped_by"] == "max_steps"
    assert 0 <= result["wer"] and 0 <= result["wer_noisy"] and result["model"] == "lstm"
    losses = [m["train_loss"] for m in _metrics(straight)]
    assert losses[-1] < losses[0]  # it learns

    assert _train(tone_corpus, split, "--max-steps", "6") == 0
    assert _train(tone_corpus, split, "--resume", "--max-steps", "12") == 0
    resumed = json.loads((split / "result.json").read_text())
    assert resumed["params_sha256"] == result["params_sha256"]
    keys = ("step", "train_loss", "wer", "wer_noisy", "accuracy")
    assert [[m[k] for k in keys] for m in _metrics(split)] == [
        [m[k] for k in keys] for m in _metrics(straight)
    ]

    capsys.readouterr()
    wav = tone_corpus / "wav" / "test0.wav"
    (tmp_path / "bad.wav").write_text("no audio here")
    argv = ["speech", "transcribe", "--checkpoint", str(straight / "checkpoint.pt")]
    assert main([*argv, str(wav), str(tmp_path / "bad.wav")]) == 2
    out, err = capsys.readouterr()
    [line] = out.splitlines()
    path, words = line.split("\t")
    assert path == str(wav) and set(words.split()) <= {"one", "two", "three"}
    assert "bad.wav: not a PCM WAV file" in err


def test_a_time_budget_still_writes_the_result(tone_corpus, tmp_path):
    assert _train(tone_corpus, tmp_path / "run", "--max-minutes", "0.0001") == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["stopped_by"] == "max_minutes" and result["steps"] >= 1


def test_a_resume_may_not_change_the_numbers(tone_corpus, tmp_path, capsys):
    assert _train(tone_corpus, tmp_path / "run", "--max-steps", "1") == 0
    assert _train(tone_corpus, tmp_path / "run", "--max-steps", "2") == 2
    assert "pass --resume" in capsys.readouterr().err
    assert _train(tone_corpus, tmp_path / "run", "--resume", "--hidden", "9") == 2
    assert "--resume: hidden is 8 in the checkpoint, not 9" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model", "gru"], "model must be one of lstm, rnn"),
        (["--model", "rnn", "--zoneout", "0.1"], "zoneout: LSTM variants"),
        (["--model", "rnn", "--forget-bias", "2"], "forget_bias: LSTM variants"),
        (["--batch", "0"], "batch must be a positive integer"),
    ],
)
def test_bad_options_are_one_line(tone_corpus, tmp_path, capsys, flags, message):
    assert _train(tone_corpus, tmp_path / "run", *flags) == 2
    assert message in capsys.readouterr().err


def test_a_missing_corpus_and_checkpoint_are_named(tmp_path, capsys):
    assert main(["speech", "train", "--data", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "no manifest at" in capsys.readouterr().err
    argv = ["speech", "transcribe", "--checkpoint", str(tmp_path / "c.pt"), "x.wav"]
    assert main(argv) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_the_report_has_a_speech_section(tone_corpus, tmp_path):
    for model in ("lstm", "rnn"):
        assert _train(tone_corpus, tmp_path / model, "--model", model, "--max-steps", "3") == 0
    page = write_report(tmp_path).read_text()
    section = page[page.index("Speech: connected digits with CTC</h2>") :]
    assert "not available" not in section
    assert section.count("<img") == 2  # WER curves, spectrogram with the CTC outputs
    assert "<td>lstm</td>" in section and "<td>rnn</td>" in section


def test_a_loss_that_turns_nan_stops_the_run_in_one_line(tone_corpus, tmp_path, capsys):
    """--lr 1e30 sends the weights to ~1e30 in one Adam step: the next loss is not finite."""
    assert _train(tone_corpus, tmp_path / "run", "--lr", "1e30", "--max-steps", "4") == 2
    err = capsys.readouterr().err
    assert "the training loss became" in err and "lower --lr (1e+30)" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "result.json").exists()
