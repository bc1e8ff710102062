"""Reduce-on-plateau: the schedule's arithmetic, and a trainer that cuts the lr and resumes the
schedule bit for bit."""

import json
import math

import pytest
import torch

from cellstate.training.config import ModelConfig, RunConfig, TaskConfig, TrainingConfig
from cellstate.training.lr_schedule import Plateau, scheduled_lr
from cellstate.training.trainer import ResumeError, Trainer


def test_the_docstring_example():
    plateau = Plateau()
    cuts = [plateau.update(loss, patience=2) for loss in (0.20, 0.15, 0.149, 0.150)]
    assert cuts == [False, False, False, True]
    assert (plateau.best, plateau.stalled, plateau.cuts) == (0.15, 0, 1)


def test_progress_restarts_the_count_and_patience_one_cuts_at_once():
    plateau = Plateau()
    assert [plateau.update(x, patience=1) for x in (1.0, 0.8, 0.795, 0.78, 0.78, 0.5)] == [
        False,  # the first evaluation is progress from inf
        False,  # 0.8: progress, and learning has begun (10% below the first)
        True,  # 0.795 is not 1% below 0.8
        False,  # 0.78 is
        True,
        False,
    ]
    assert plateau.cuts == 2 and plateau.best == 0.5


def test_no_cut_on_the_initial_plateau():
    plateau = Plateau()
    flat = [plateau.update(x, patience=1) for x in (1.0, 1.0, 0.999, 0.995, 0.95, 0.95, 0.95)]
    assert flat == [False] * 7 and plateau.cuts == 0  # 0.95 is not yet 10% below 1.0
    assert [plateau.update(x, patience=1) for x in (0.85, 0.85)] == [False, True]


def test_no_cut_above_half_the_memoryless_baseline():
    # Copy at T = 1000 (RESULTS.md): the first evaluation above the baseline 0.0204, then a
    # plateau 11% below it; without the baseline the lr was cut at every second evaluation.
    losses = (0.0225, 0.0205, 0.0199, 0.0196, 0.0197, 0.0197, 0.0189, 0.0186, 0.0185, 0.0185)
    without = Plateau()
    assert sum(without.update(x, patience=2) for x in losses) == 2
    plateau = Plateau()
    assert not any(plateau.update(x, patience=2, baseline=0.0204) for x in losses)
    # Once learning is under way (below half the baseline) stalls count as before.
    assert [plateau.update(x, patience=2, baseline=0.0204) for x in (0.01, 0.0099, 0.0099)] == [
        False,
        False,
        True,
    ]


def test_after_a_spike_progress_counts_from_the_loss_cut_at():
    # Copy T = 1000's test losses from 600,000 to 710,016 (RESULTS.md): a spike at 640,000. The
    # run's rule (progress against the best before the spike) cut at 640,000, 670,000, 690,016
    # and 710,016; measured from the loss cut at, the recovery is progress: one cut.
    losses = (0.00541, 0.00533, 0.00485, 0.00481, 0.01403, 0.01177, 0.01023, 0.00982, 0.00954)
    losses += (0.00946, 0.00937, 0.00934)
    plateau = Plateau(first=0.02247, best=0.00541)
    cuts = [plateau.update(x, patience=2, baseline=0.0204) for x in losses]
    assert [i for i, cut in enumerate(cuts) if cut] == [4]
    assert plateau.cuts == 1 and plateau.best == 0.00937  # 0.00934 is not 1% below it


def test_scheduled_lr():
    assert scheduled_lr(0.01, 0.3, 0) == 0.01
    assert scheduled_lr(0.01, 0.3, 2) == pytest.approx(0.0009)
    assert scheduled_lr(0.01, 1.0, 5) == 0.01
    assert scheduled_lr(0.01, 0.3, 3, floor=0.001) == 0.001
    # The default floor, two cuts, is the second cut's own float: runs that never cut more than
    # twice (copy T = 100) set the same lr as before the floor existed.
    floor = RunConfig(TaskConfig("copy", 100)).training.lr_min
    assert scheduled_lr(0.01, 0.3, 2, floor) == scheduled_lr(0.01, 0.3, 2) == floor


def _config(
    max_sequences: int, lr_decay: float = 0.5, lr_patience: int = 1, lr_min: float | None = 0.0
) -> RunConfig:
    return RunConfig(
        TaskConfig("adding", 11),
        ModelConfig(hidden=4),
        TrainingConfig(
            lr=0.1,  # high enough for the test loss to stall and the lr to be cut
            batch_size=8,
            eval_every=32,
            checkpoint_every=64,
            test_size=64,
            lr_decay=lr_decay,
            lr_patience=lr_patience,
            lr_min=lr_min,
            max_sequences=max_sequences,
        ),
    )


def _lrs(run_dir) -> list[float]:
    return [json.loads(line)["lr"] for line in open(run_dir / "metrics.jsonl")]


def test_the_trainer_cuts_the_lr_and_a_resume_continues_the_schedule(tmp_path):
    whole = Trainer(_config(640), tmp_path / "whole", progress=False).run()
    lrs = _lrs(tmp_path / "whole")
    # Every logged lr is 0.1 * 0.5**k, k never falling; cuts happen before and after 320.
    cuts = [round(math.log2(0.1 / lr)) for lr in lrs]
    assert lrs == [0.1 * 0.5**k for k in cuts] and cuts == sorted(cuts)
    assert 0 < cuts[len(cuts) // 2 - 1] < cuts[-1]
    Trainer(_config(320), tmp_path / "split", progress=False).run()
    resumed = Trainer(_config(640), tmp_path / "split", resume=True, progress=False).run()
    assert resumed.params_sha256 == whole.params_sha256
    assert _lrs(tmp_path / "split") == lrs
    # A constant lr (decay 1) is a different run, and one a resume refuses to mix in.
    constant = Trainer(_config(640, lr_decay=1.0), progress=False).run()
    assert constant.params_sha256 != whole.params_sha256
    with pytest.raises(ResumeError, match="training.lr_decay"):
        Trainer(_config(960, lr_decay=1.0), tmp_path / "split", resume=True, progress=False)


def test_the_cuts_end_at_the_floor(tmp_path):
    # The scenario above with the default floor, lr * decay**2: without it the lr goes on halving
    # (the test above); with it, two cuts and the lr stays at 0.025 to the end.
    Trainer(_config(640, lr_min=None), tmp_path, progress=False).run()
    lrs = _lrs(tmp_path)
    assert sorted(set(lrs), reverse=True) == [0.1, 0.05, 0.1 * 0.5**2] and lrs[-1] == 0.025
    assert (
        torch.load(tmp_path / "checkpoint.pt", weights_only=False)["counters"]["plateau"]["cuts"]
        == 2
    )


def test_a_run_cut_below_the_floor_before_it_existed_resumes_at_the_floor(tmp_path):
    # As copy T = 1000's runs were left (RESULTS.md): cut 38 times to lr ~1e-22, a config.json
    # without lr_min. Resumed, the run steps at the floor and cuts no more.
    Trainer(_config(320), tmp_path, progress=False).run()
    path = tmp_path / "checkpoint.pt"
    state = torch.load(path, weights_only=False)
    state["counters"]["plateau"]["cuts"] = 38
    for group in state["optimizer"]["param_groups"]:
        group["lr"] = 0.1 * 0.5**38
    del state["config"]["training"]["lr_min"]
    torch.save(state, path)
    Trainer(_config(640, lr_min=None), tmp_path, resume=True, progress=False).run()
    assert set(_lrs(tmp_path)[-10:]) == {0.025}  # 320 .. 640: evaluations every 32


def test_a_checkpoint_from_before_lr_decay_resumes_at_a_constant_lr(tmp_path):
    old = dict(lr_decay=1.0, lr_patience=2)  # what an old config.json reads back as
    whole = Trainer(_config(192, **old), progress=False).run()
    Trainer(_config(96, **old), tmp_path, progress=False).run()
    path = tmp_path / "checkpoint.pt"
    state = torch.load(path, weights_only=False)  # as written before the fields existed
    del state["counters"]["plateau"]
    del state["config"]["training"]["lr_decay"], state["config"]["training"]["lr_patience"]
    torch.save(state, path)
    resumed = Trainer(_config(192, **old), tmp_path, resume=True, progress=False).run()
    assert resumed.params_sha256 == whole.params_sha256


def test_the_trainer_gives_the_plateau_copy_s_memoryless_baseline(tmp_path):
    # Copy T = 30 learns its blanks (the test loss falls far below the first evaluation's) but
    # stays above half its baseline in 1280 sequences: no cut (the old rule cut three times).
    config = RunConfig(
        TaskConfig("copy", 30),
        ModelConfig(hidden=8),
        TrainingConfig(
            lr=0.01,
            batch_size=8,
            eval_every=64,
            test_size=64,
            lr_decay=0.5,
            lr_patience=1,
            max_sequences=1280,
        ),
    )
    trainer = Trainer(config, tmp_path, progress=False)
    trainer.run()
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    losses = [row["test_loss"] for row in rows]
    assert min(losses) < 0.9 * losses[0] and min(losses) > 0.5 * trainer.task.baseline_loss
    assert {row["lr"] for row in rows} == {0.01}
