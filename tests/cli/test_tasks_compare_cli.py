"""`cellstate tasks` lists every task; `cellstate compare` writes compare.json and the plot,
spans the article's claim by default and times the kernel's compile apart from the runs."""

import json
import time

import pytest
import torch

from cellstate.cli import compare
from cellstate.cli.main import build_parser, main
from cellstate.tasks import TASKS, make_task
from cellstate.training.trainer import Result


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


def test_compare_defaults_span_the_claim_with_dense_evaluations():
    configs = compare.build_configs(build_parser().parse_args(["compare"]))
    lengths = sorted({c.task.length for c in configs})
    with pytest.raises(ValueError):  # 11 is the shortest lag the adding problem allows
        make_task("adding", lengths[0] - 1)
    assert lengths[0] == 11 and lengths[-1] == 1000 and len(lengths) >= 5
    assert {c.model.kind for c in configs} == {"rnn", "lstm"}
    assert {c.training.eval_every for c in configs} == {2000}


def _result(model: str, length: int, solved: bool, wrong: int) -> Result:
    return Result(
        "adding", length, model, solved, 100, wrong / 2560, wrong, 1.0, "", "", 0.0, 2560, None
    )


def test_answer_states_the_measured_outcome_in_one_sentence():
    results = [_result("lstm", T, True, 0) for T in (11, 100, 1000)]
    results += [_result("rnn", 11, False, 610), _result("rnn", 100, False, 2150)]
    results += [_result("rnn", 1000, False, 2160)]
    text = compare.answer(results, 50_000, 0)
    assert text == (
        "Measured here on the adding problem: the LSTM solved every lag from T=11 to T=1000; "
        "the plain RNN solved none of T=11, 100, 1000 (fewest errors: 610/2560 test sequences "
        "wrong at T=11) (seed 0, at most 50,000 training sequences per run)."
    )
    results[3] = _result("rnn", 11, True, 0)
    assert "the plain RNN solved T=11 and failed at T=100, 1000" in compare.answer(results, 9, 0)


def test_kernel_compile_is_timed_apart_from_the_runs(tmp_path, capsys, monkeypatch):
    compile_seconds, load, calls = 1.5, compare.cpu_kernel.load, []

    def slow_load():  # the first call compiles for compile_seconds (ops call load() per step)
        if not calls:
            time.sleep(compile_seconds)
        calls.append(1)
        return load()

    monkeypatch.setattr(compare.cpu_kernel, "is_built", lambda: False)
    monkeypatch.setattr(compare.cpu_kernel, "load", slow_load)
    monkeypatch.setattr(compare, "write_report", lambda out: out / "report.html")  # not tested here
    argv = ["compare", "--lengths", "11", "--hidden", "4", "--max-sequences", "32"]
    assert main([*argv, "--test-size", "64", "--quiet", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "compare.json").read_text())
    assert data["kernel"] == "compiled" and data["kernel_seconds"] >= compile_seconds
    assert all(r["result"]["seconds"] < compile_seconds for r in data["runs"])
    assert data["startup_seconds"] is None or 0 < data["startup_seconds"] < 3600
    printed = capsys.readouterr().out
    assert "CPU kernel compiled: " in printed and "(not counted in the runs' seconds)" in printed
    assert data["answer"] in printed and data["claim"].startswith("The article's claim")


def test_compare_uses_each_task_s_own_hidden_size():
    def hidden(*flags):
        args = build_parser().parse_args(["compare", "--lengths", "11", *flags])
        return {config.model.hidden for config in compare.build_configs(args)}

    assert hidden() == {32}  # adding, the demo: the general default
    assert hidden("--task", "copy", "--models", "lstm") == {128}  # copy's own (TASK_DEFAULTS)
    assert hidden("--task", "copy", "--hidden", "16") == {16}
