"""Properties every task shares: determinism, shapes, padding, loss and correctness, validation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cellstate.tasks import TASKS, Batch, FinalStepTask, Task, make_task
from cellstate.tasks.copy_memory import CopyTask
from cellstate.tasks.two_sequence import TwoSequenceNoisyTargetTask
from tests.differential import EXACT

# Small lengths keep the whole file fast; reber has no length.
SMALL = {name: (None if cls.default_length is None else 20) for name, cls in TASKS.items()}
NAMES = sorted(TASKS)


def small(name: str) -> Task:
    return make_task(name, SMALL[name])


def draw(task: Task, seed: int, batch_size: int = 16) -> Batch:
    return task.batch(batch_size, torch.Generator().manual_seed(seed))


def perfect_outputs(task: Task, batch: Batch) -> torch.Tensor:
    """(T, B, O) outputs a perfect model would give, built from the targets (3c: the noise-free
    ones)."""
    if isinstance(task, CopyTask):
        return 20.0 * F.one_hot(batch.targets, task.output_size).float()
    if isinstance(task, FinalStepTask):
        outputs = torch.zeros(*batch.inputs.shape[:2], task.output_size)
        targets = noise_free_targets(task, batch)
        outputs[batch.lengths - 1, torch.arange(batch.lengths.numel())] = targets
        return outputs
    return batch.targets.clone()


def noise_free_targets(task: Task, batch: Batch) -> torch.Tensor:
    """(B, O): the targets of a final-step task; 3c's are (noisy, noise-free) in two columns."""
    return batch.targets[:, 1:] if isinstance(task, TwoSequenceNoisyTargetTask) else batch.targets


def perfect_loss(task: Task, batch: Batch) -> float:
    """The loss of `perfect_outputs`: 0, except 3c's target noise, which no model can predict."""
    if isinstance(task, TwoSequenceNoisyTargetTask):
        return float(((batch.targets[:, 0] - batch.targets[:, 1]) ** 2).mean())
    return 0.0


def wrong_outputs(task: Task, batch: Batch) -> torch.Tensor:
    """(T, B, O) outputs off by a full unit wherever the task scores."""
    if isinstance(task, CopyTask):
        return 20.0 * F.one_hot((batch.targets + 1) % task.output_size, task.output_size).float()
    return perfect_outputs(task, batch) + 1.0


def test_registry_has_the_twelve_names() -> None:
    assert set(TASKS) == {
        "adding",
        "adding-modern",
        "multiplication",
        "temporal-order",
        "temporal-order-3",
        "long-lag",
        "long-lag-distractors",
        "two-sequence",
        "two-sequence-3b",
        "two-sequence-3c",
        "reber",
        "copy",
    }
    for name, cls in TASKS.items():
        assert cls.name == name
        assert cls.summary and "\n" not in cls.summary


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_batch_and_other_seed_differs(name: str) -> None:
    task = small(name)
    a, b, c = draw(task, 1), draw(task, 1), draw(task, 2)
    for field in ("inputs", "targets", "lengths", "mask"):
        if getattr(a, field) is None:
            assert getattr(b, field) is None
        else:
            torch.testing.assert_close(getattr(a, field), getattr(b, field), **EXACT)
    assert a.inputs.shape != c.inputs.shape or not torch.equal(a.inputs, c.inputs)


@pytest.mark.parametrize("name", NAMES)
def test_generator_state_advances(name: str) -> None:
    task = small(name)
    generator = torch.Generator().manual_seed(3)
    first, second = task.batch(8, generator), task.batch(8, generator)
    assert first.inputs.shape != second.inputs.shape or not torch.equal(first.inputs, second.inputs)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtypes_and_padding(name: str) -> None:
    task = small(name)
    batch = draw(task, 0, batch_size=64)
    steps, size = batch.inputs.shape[:2]
    assert size == 64 and batch.inputs.shape[2] == task.input_size
    assert batch.inputs.dtype == torch.float32
    assert batch.lengths.dtype == torch.int64 and batch.lengths.shape == (64,)
    assert int(batch.lengths.max()) == steps and int(batch.lengths.min()) >= 1
    padding = torch.arange(steps)[:, None] >= batch.lengths[None, :]
    assert not batch.inputs[padding].any(), "inputs must be zero after each sequence's end"
    if isinstance(task, FinalStepTask):
        assert batch.mask is None
        assert noise_free_targets(task, batch).shape == (64, task.output_size)
        assert batch.targets.dtype == torch.float32
    else:
        assert batch.mask is not None and batch.mask.dtype == torch.bool
        torch.testing.assert_close(batch.mask, ~padding)
        if isinstance(task, CopyTask):
            assert batch.targets.shape == (steps, 64) and batch.targets.dtype == torch.int64
        else:
            assert batch.targets.shape == (steps, 64, task.output_size)


@pytest.mark.parametrize("name", NAMES)
def test_perfect_outputs_are_correct_with_zero_loss(name: str) -> None:
    task = small(name)
    batch = draw(task, 4, batch_size=32)
    outputs = perfect_outputs(task, batch)
    assert task.correct(outputs, batch).all()
    correct = task.correct(outputs, batch)
    assert correct.shape == (32,) and correct.dtype == torch.bool
    loss = task.loss(outputs, batch)
    assert loss.shape == () and abs(float(loss) - perfect_loss(task, batch)) < 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_wrong_outputs_are_incorrect_with_positive_loss(name: str) -> None:
    task = small(name)
    batch = draw(task, 5, batch_size=32)
    outputs = wrong_outputs(task, batch)
    assert not task.correct(outputs, batch).any()
    assert float(task.loss(outputs, batch)) > 0.5


@pytest.mark.parametrize("name", NAMES)
def test_one_wrong_sequence_is_the_only_incorrect_one(name: str) -> None:
    task = small(name)
    batch = draw(task, 6, batch_size=8)
    outputs = perfect_outputs(task, batch)
    outputs[:, 3] = wrong_outputs(task, batch)[:, 3]
    expected = torch.ones(8, dtype=torch.bool)
    expected[3] = False
    torch.testing.assert_close(task.correct(outputs, batch), expected)


# long-lag and copy score every step of every sequence.
@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("long-lag", "copy")])
def test_unscored_steps_do_not_count(name: str) -> None:
    task = small(name)
    batch = draw(task, 7, batch_size=32)
    outputs = perfect_outputs(task, batch)
    steps = batch.inputs.shape[0]
    if isinstance(task, FinalStepTask):
        unscored = torch.arange(steps)[:, None] != (batch.lengths - 1)[None, :]
    else:
        unscored = ~batch.mask
    assert unscored.any()
    outputs[unscored] = 7.0
    assert task.correct(outputs, batch).all()
    assert abs(float(task.loss(outputs, batch)) - perfect_loss(task, batch)) < 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_outputs_of_the_wrong_shape_raise(name: str) -> None:
    task = small(name)
    batch = draw(task, 0, batch_size=4)
    outputs = torch.zeros(*batch.inputs.shape[:2], task.output_size + 1)
    with pytest.raises(ValueError, match="output_size"):
        task.loss(outputs, batch)
    with pytest.raises(ValueError, match="output_size"):
        task.correct(outputs, batch)


@pytest.mark.parametrize("name", NAMES)
def test_bad_batch_size_raises(name: str) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        small(name).batch(0, torch.Generator())


@pytest.mark.parametrize(
    ("name", "kwargs", "argument"),
    [
        ("adding", {"length": 10}, "length"),
        ("adding", {"length": 100.0}, "length"),
        ("adding", {"length": True}, "length"),
        ("adding-modern", {"length": 1}, "length"),
        ("multiplication", {"length": 10}, "length"),
        ("temporal-order", {"length": 9}, "length"),
        ("temporal-order-3", {"length": 9}, "length"),
        ("long-lag", {"length": 1}, "length"),
        ("long-lag-distractors", {"length": 0}, "length"),
        ("long-lag-distractors", {"length": 10, "n_distractors": 0}, "n_distractors"),
        ("two-sequence", {"length": 10, "n_informative": 0}, "n_informative"),
        ("two-sequence", {"length": 3, "n_informative": 3}, "length"),
        ("two-sequence-3b", {"length": 10, "n_informative": -1}, "n_informative"),
        ("two-sequence-3c", {"length": 10, "n_informative": 1.5}, "n_informative"),
        ("copy", {"length": 0}, "length"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(name: str, kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=f"{name}: {argument} must be"):
        make_task(name, **kwargs)


def test_make_task_defaults_and_unknown_names() -> None:
    assert make_task("adding").length == 100
    assert make_task("adding", 1000).length == 1000
    assert make_task("two-sequence", 100, n_informative=1).n_informative == 1
    assert make_task("reber").length is None
    with pytest.raises(ValueError, match="reber: takes no length"):
        make_task("reber", 50)
    with pytest.raises(ValueError, match="known tasks: adding, adding-modern"):
        make_task("addition")


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("adding", {"length": 100}, 74_000),
        ("adding", {"length": 500}, 209_000),
        ("adding", {"length": 1000}, 853_000),
        ("adding", {"length": 200}, None),
        ("adding-modern", {"length": 100}, None),
        ("multiplication", {"length": 100}, 482_000),
        ("temporal-order", {"length": 100}, 31_390),
        ("temporal-order-3", {"length": 100}, 571_100),
        ("temporal-order-3", {"length": 200}, None),
        ("long-lag", {"length": 100}, 5_040),
        ("long-lag-distractors", {"length": 1000}, 49_000),
        ("long-lag-distractors", {"length": 50}, 30_000),
        ("long-lag-distractors", {"length": 50, "n_distractors": 10}, None),
        ("two-sequence", {"length": 100}, 27_380),
        ("two-sequence", {"length": 100, "n_informative": 1}, 58_370),
        ("two-sequence", {"length": 1000}, 446_850),
        ("two-sequence-3b", {"length": 100}, None),  # no 3b/3c figure at hand
        ("two-sequence-3c", {"length": 100, "n_informative": 1}, None),
        ("reber", {}, 8_440),
        ("copy", {"length": 100}, None),
    ],
)
def test_paper_sequences(name: str, kwargs: dict, expected: int | None) -> None:
    assert make_task(name, **kwargs).paper_sequences == expected


@pytest.mark.parametrize(
    ("name", "kind", "beta", "window"),
    [
        ("adding", "st3", 0.01, 2000),
        ("temporal-order", "st3", 0.1, 2000),
        ("temporal-order-3", "st3", 0.1, 2000),
        ("long-lag", "window", None, 10_000),
        ("long-lag-distractors", "window", None, 10_000),
        ("two-sequence", "test", None, None),
        ("two-sequence-3b", "test", None, None),
        ("two-sequence-3c", "test", None, None),
        ("reber", "test", None, None),
    ],
)
def test_paper_criteria(name: str, kind: str, beta: float | None, window: int | None) -> None:
    criterion = make_task(name).criterion
    assert (criterion.kind, criterion.beta, criterion.window) == (kind, beta, window)
    assert criterion.test_size == (256 if kind == "test" else None)


def test_multiplication_stops_at_the_papers_test_count() -> None:
    criterion = make_task("multiplication").criterion
    assert (criterion.kind, criterion.test_size, criterion.max_wrong) == ("test", 2560, 139)


@pytest.mark.parametrize("name", ["adding", "reber"])
def test_batch_to_moves_every_field(name: str) -> None:
    batch = draw(small(name), 0, batch_size=4)
    moved = batch.to("cpu")
    assert moved is not batch
    for field in ("inputs", "targets", "lengths", "mask"):
        if getattr(batch, field) is None:
            assert getattr(moved, field) is None
        else:
            assert torch.equal(getattr(moved, field), getattr(batch, field))
