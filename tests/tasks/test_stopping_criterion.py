"""StoppingCriterion validation and the CriterionMonitor logic a trainer relies on."""

from __future__ import annotations

import pytest
import torch

from cellstate.tasks import CriterionMonitor, StoppingCriterion, make_task


def flags(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.bool)


def ok(n: int) -> torch.Tensor:
    return torch.ones(n, dtype=torch.bool)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "st4"}, "kind must be one of"),
        ({"kind": "st3", "window": 2000}, "st3: beta must be a positive number"),
        ({"kind": "st3", "beta": 0.01}, "st3: window must be a positive number"),
        ({"kind": "window", "window": 0}, "window: window must be a positive number"),
        ({"kind": "mse", "window": 10}, "mse: beta"),
        ({"kind": "test"}, "test: test_size"),
        ({"kind": "window", "window": 5, "max_sequences": 0}, "max_sequences"),
        ({"kind": "metric", "beta": 0.01}, "metric: a test metric's name"),
        ({"kind": "test", "test_size": 4, "metric": "symbol_error"}, "for kind 'metric' only"),
    ],
)
def test_invalid_criteria_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StoppingCriterion(**kwargs)


def test_st3_needs_the_window_all_correct_and_a_low_mean_error() -> None:
    monitor = StoppingCriterion("st3", beta=0.01, window=10).monitor()
    monitor.update(0.001, ok(4))
    monitor.update(0.001, ok(4))
    assert not monitor.satisfied(), "only 8 of the 10 sequences seen"
    monitor.update(0.001, ok(4))
    assert monitor.satisfied() and monitor.sequences == 12
    monitor.update(0.001, flags(1, 1, 0, 1))  # an error: the streak restarts at 1
    assert not monitor.satisfied()
    monitor.update(0.001, ok(4))
    monitor.update(0.001, ok(4))
    assert not monitor.satisfied(), "9 correct since the error"
    monitor.update(0.001, ok(1))
    assert monitor.satisfied()


def test_st3_mean_error_is_over_the_last_window_sequences() -> None:
    monitor = StoppingCriterion("st3", beta=0.01, window=10).monitor()
    monitor.update(0.5, ok(8))  # high error, all correct
    monitor.update(0.0, ok(4))
    # The last 10 sequences: 6 at 0.5 and 4 at 0.0, mean 0.3.
    assert not monitor.satisfied()
    monitor.update(0.0, ok(5))  # now 1 at 0.5 and 9 at 0.0: mean 0.05
    assert not monitor.satisfied()
    monitor.update(0.0, ok(1))
    assert monitor.satisfied()


def test_window_ignores_the_loss() -> None:
    monitor = StoppingCriterion("window", window=6).monitor()
    monitor.update(9.0, flags(0, 1, 1))
    monitor.update(9.0, ok(3))
    assert not monitor.satisfied(), "5 correct in a row"
    monitor.update(9.0, ok(1))
    assert monitor.satisfied()


def test_mse_ignores_correctness_but_needs_a_full_window() -> None:
    monitor = StoppingCriterion("mse", beta=0.1, window=6).monitor()
    monitor.update(0.05, torch.zeros(4, dtype=torch.bool))
    assert not monitor.satisfied(), "only 4 of 6 sequences seen"
    monitor.update(0.05, torch.zeros(2, dtype=torch.bool))
    assert monitor.satisfied()
    monitor.update(0.5, ok(1))
    assert not monitor.satisfied(), "mean over the last 6: (5 * 0.05 + 0.5) / 6 = 0.125"


def test_test_kind_follows_the_latest_evaluation() -> None:
    monitor = StoppingCriterion("test", test_size=4).monitor()
    monitor.update(0.0, ok(100))
    assert not monitor.satisfied(), "training batches alone never satisfy a test criterion"
    monitor.update_test(flags(1, 1, 0, 1))
    assert not monitor.satisfied()
    monitor.update_test(ok(4))
    assert monitor.satisfied()
    monitor.update_test(flags(1, 1, 1, 1, 0))
    assert not monitor.satisfied()
    with pytest.raises(ValueError, match="at least 4 test sequences, got 3"):
        monitor.update_test(ok(3))


def test_test_kind_with_max_wrong_allows_that_many_errors() -> None:
    monitor = StoppingCriterion("test", test_size=4, max_wrong=1).monitor()
    monitor.update_test(flags(1, 0, 1, 0))
    assert not monitor.satisfied(), "2 wrong, 1 allowed"
    monitor.update_test(flags(1, 1, 0, 1))
    assert monitor.satisfied()
    assert "at most 1 of 4 fresh test sequences wrong" in monitor.criterion.describe()
    with pytest.raises(ValueError, match="max_wrong"):
        StoppingCriterion("st3", beta=0.1, window=4, max_wrong=1)


def test_metric_kind_follows_the_latest_evaluation_s_metric() -> None:
    monitor = StoppingCriterion("metric", beta=0.01, metric="symbol_error").monitor()
    monitor.update(0.0, ok(100))
    assert not monitor.satisfied(), "training batches alone never satisfy a metric criterion"
    monitor.update_test(flags(0, 0), {"symbol_error": 0.0099})  # wrong sequences do not matter
    assert monitor.satisfied()
    monitor.update_test(ok(2), {"symbol_error": 0.01})
    assert not monitor.satisfied()
    assert monitor.criterion.describe() == "symbol_error on the held-out sequences < 0.01"


def test_copy_stops_when_its_symbol_error_is_below_one_percent() -> None:
    criterion = make_task("copy").criterion
    assert (criterion.kind, criterion.metric, criterion.beta) == ("metric", "symbol_error", 0.01)
    assert criterion.metric in make_task("copy").test_metric_names


def test_gave_up_counts_sequences() -> None:
    monitor = StoppingCriterion("window", window=5, max_sequences=10).monitor()
    monitor.update(0.0, flags(0, 0, 0, 0, 0, 0))
    assert not monitor.gave_up()
    monitor.update(0.0, flags(0, 0, 0, 0))
    assert monitor.gave_up() and not monitor.satisfied()
    assert not StoppingCriterion("window", window=5).monitor().gave_up()


def test_monitors_are_independent_and_criteria_are_data() -> None:
    criterion = make_task("adding").criterion
    first, second = criterion.monitor(), criterion.monitor()
    assert isinstance(first, CriterionMonitor)
    first.update(0.0, ok(2000))
    assert first.satisfied() and not second.satisfied()
    assert criterion == StoppingCriterion("st3", beta=0.01, window=2000)
    with pytest.raises(AttributeError):
        criterion.beta = 0.5  # type: ignore[misc]
    assert "ST3(0.01)" in criterion.describe()
    assert "give up after 5000000" in make_task("long-lag").criterion.describe()


def test_monitor_accepts_correct_flags_from_a_task() -> None:
    task = make_task("adding", 20)
    batch = task.batch(8, torch.Generator().manual_seed(0))
    outputs = torch.zeros(*batch.inputs.shape[:2], 1)
    outputs[batch.lengths - 1, torch.arange(8)] = batch.targets
    monitor = StoppingCriterion("window", window=8).monitor()
    monitor.update(float(task.loss(outputs, batch)), task.correct(outputs, batch))
    assert monitor.satisfied()
