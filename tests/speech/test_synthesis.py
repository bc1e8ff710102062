import os
import shutil

import pytest

from cellstate.cli.main import main
from cellstate.speech.manifest import read_manifest
from cellstate.speech.synthesis import plan, synthesise


def test_the_plan_is_seeded_and_splits_by_voice():
    variants = [f"v{i}" for i in range(20)]
    a, b = plan(200, 3, variants), plan(200, 3, variants)
    assert a == b and a != plan(200, 4, variants)
    train = {s.variant for s in a if s.split == "train"}
    test = {s.variant for s in a if s.split == "test"}
    assert test and train and not train & test
    assert all(1 <= len(s.words) <= 7 for s in a)
    zeros = {w for s in a for w in s.words} & {"zero", "oh"}
    assert zeros == {"zero", "oh"}
    assert any(s.snr_db for s in a) and not any(s.snr_db for s in a if s.split == "test")


def test_without_espeak_ng_the_command_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no espeak-ng on it
    assert main(["speech", "data", "--out", str(tmp_path / "d"), "--utterances", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "espeak-ng is not installed" in err
    assert "apt-get install espeak-ng" in err


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_espeak_synthesis_writes_a_deterministic_corpus(tmp_path):
    first = synthesise(tmp_path / "a", utterances=8, seed=1, progress=False)
    second = synthesise(tmp_path / "b", utterances=8, seed=1, progress=False)
    assert first["spoken"] == second["spoken"] and (first["train"], first["test"]) == (7, 1)
    train = read_manifest(tmp_path / "a" / "train.csv")
    assert len(train) == 7
    for name in os.listdir(tmp_path / "a" / "wav" / "train"):
        a = (tmp_path / "a" / "wav" / "train" / name).read_bytes()
        assert a == (tmp_path / "b" / "wav" / "train" / name).read_bytes()
    with pytest.raises(FileExistsError, match="already holds a corpus"):
        synthesise(tmp_path / "a", utterances=8, seed=1, progress=False)
