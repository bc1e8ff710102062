"""benchmarks/copy_positions.py scores a copy run's checkpoint on the run's own held-out set: the
mean of its per-position errors is the symbol_error the trainer logged there."""

import importlib.util
import json
from pathlib import Path

import pytest

from cellstate.training.config import ModelConfig, RunConfig, TaskConfig, TrainingConfig
from cellstate.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "positions", ROOT / "benchmarks/copy_positions.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_positions_average_to_the_logged_symbol_error(tmp_path):
    # test_size 300 is not a multiple of the trainer's test chunk: the chunks must match it.
    training = TrainingConfig(max_sequences=3200, eval_every=1600, test_size=300, lr=0.01)
    config = RunConfig(TaskConfig("copy", 8), ModelConfig(hidden=16), training)
    Trainer(config, out=tmp_path, progress=False).run()
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]

    sequences, by_position = _script().errors_by_position(str(tmp_path))

    assert sequences == logged[-1]["sequences"] == 3200
    assert by_position.shape == (10,)
    assert 0 < float(by_position.mean()) < 1  # learning has begun: some symbols right
    assert float(by_position.mean()) == pytest.approx(logged[-1]["symbol_error"], abs=1e-6)


def test_other_tasks_are_refused(tmp_path):
    config = RunConfig(TaskConfig("adding", 20), training=TrainingConfig(max_sequences=32))
    Trainer(config, out=tmp_path, progress=False).run()
    with pytest.raises(SystemExit, match="'adding' run"):
        _script().errors_by_position(str(tmp_path))
