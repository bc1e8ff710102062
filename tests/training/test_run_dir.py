import json
from pathlib import Path

import pytest

from cellstate.training.run_dir import RUN_FILES, RunDir, RunDirError, read_json, write_json


def test_a_write_cut_short_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    write_json(path, {"steps": 1})
    real_write_text = Path.write_text

    def disk_full(self, text, *args, **kwargs):  # half of it lands, then the disk is full
        real_write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_json(path, {"steps": 2, "val_bpc": 1.5})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"steps": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary file left


def test_metrics_append_read_back_and_truncate(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.read_metrics() == []  # none yet
    run.path.mkdir()
    for step in (100, 200, 300):
        run.append_metrics({"step": step, "loss": step / 1000})
    assert [r["step"] for r in run.read_metrics()] == [100, 200, 300]
    run.truncate_metrics(lambda record: record["step"] <= 200)  # a resume from step 200
    assert run.read_metrics() == [{"step": 100, "loss": 0.1}, {"step": 200, "loss": 0.2}]
    with run.metrics.open("a") as f:
        f.write('{"step": 3')  # a crash mid-line
    assert [r["step"] for r in run.read_metrics()] == [100, 200]


def test_start_fresh_removes_only_a_runs_own_files(tmp_path):
    run = RunDir(tmp_path)
    for name in (*RUN_FILES, "notes.txt"):
        (tmp_path / name).write_text("old")
    run.start_fresh()
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert {run.config.name, run.metrics.name, run.checkpoint.name, run.result.name} == set(
        RUN_FILES
    )


def test_read_json_says_which_file_is_not_json(tmp_path):
    assert read_json(tmp_path / "missing.json") is None
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(RunDirError, match="config.json: expected JSON"):
        read_json(tmp_path / "config.json")
