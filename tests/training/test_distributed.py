"""DDP: 2 CPU ranks (gloo, localhost) end with identical parameters, equal to one process
training on the same global batches."""

import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from cellstate.training.config import ModelConfig, RunConfig, TaskConfig, TrainingConfig
from cellstate.training.distributed import close_world, exit_rank, init_world
from cellstate.training.trainer import Trainer
from tests.differential import EXACT, FLOAT64_KERNEL


def _config(task: str, length: int | None) -> RunConfig:
    return RunConfig(
        TaskConfig(task, length),
        ModelConfig(hidden=5, dtype="float64"),
        TrainingConfig(batch_size=8, max_sequences=96, eval_every=48, test_size=256, clip=0.05),
    )


def _rank(rank: int, port: int, task: str, length: int | None, out: str) -> None:
    # The environment torchrun gives each process.
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank)
    )
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    world = init_world("cpu")
    try:
        trainer = Trainer(_config(task, length), os.path.join(out, "run"), progress=False)
        trainer.run()
        torch.save(trainer.model.state_dict(), os.path.join(out, f"rank{rank}.pt"))
    finally:
        close_world(world)
    exit_rank(0)  # as `cellstate train` ends a rank (why: exit_rank's docstring)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(("task", "length"), [("adding", 11), ("reber", None)])
def test_two_ranks_equal_one_process(tmp_path, task, length):
    mp.spawn(_rank, args=(_free_port(), task, length, str(tmp_path)), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    single = Trainer(_config(task, length), tmp_path / "single", progress=False)
    single.run()
    for name, expected in single.model.state_dict().items():
        torch.testing.assert_close(rank0[name], rank1[name], **EXACT, msg=name)
        torch.testing.assert_close(rank0[name], expected, **FLOAT64_KERNEL, msg=name)
    # Only rank 0 wrote the run's files, and they describe the same run as one process's.
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoint.pt",
        "config.json",
        "metrics.jsonl",
        "result.json",
    ]
    assert (run / "metrics.jsonl").read_text().count("\n") == 2


def test_cellstate_train_under_torchrun_exits_zero_with_its_report(tmp_path):
    """The user's command: two ranks of `cellstate train` under torchrun finish with exit code 0
    (a rank leaves through exit_rank) after rank 0 has printed its one-line report."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "cellstate.cli.main", "train", "--task", "adding", "--length", "11"]
    command += ["--hidden", "5", "--batch-size", "8", "--max-sequences", "64", "--eval-every", "32"]
    command += ["--test-size", "64", "--quiet", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("results in") == 1, done.stdout
    assert (out / "result.json").is_file()
