"""Task names (as used on the command line) and `make_task`."""

from __future__ import annotations

from typing import Any

from cellstate.tasks.adding import AddingTask
from cellstate.tasks.adding_modern import AddingModernTask
from cellstate.tasks.base import Task
from cellstate.tasks.copy_memory import CopyTask
from cellstate.tasks.long_lag import LongLagTask
from cellstate.tasks.long_lag_distractors import LongLagDistractorsTask
from cellstate.tasks.multiplication import MultiplicationTask
from cellstate.tasks.reber import ReberTask
from cellstate.tasks.temporal_order import TemporalOrder3Task, TemporalOrderTask
from cellstate.tasks.two_sequence import (
    TwoSequenceNoisySignalTask,
    TwoSequenceNoisyTargetTask,
    TwoSequenceTask,
)

TASKS: dict[str, type[Task]] = {
    cls.name: cls
    for cls in (
        AddingTask,
        AddingModernTask,
        MultiplicationTask,
        TemporalOrderTask,
        TemporalOrder3Task,
        LongLagTask,
        LongLagDistractorsTask,
        TwoSequenceTask,
        TwoSequenceNoisySignalTask,
        TwoSequenceNoisyTargetTask,
        ReberTask,
        CopyTask,
    )
}


def make_task(name: str, length: int | None = None, **kwargs: Any) -> Task:
    """The task called `name`, at `length` (None: the task's `default_length`).

    `kwargs` go to the task's constructor (the two-sequence tasks: n_informative;
    long-lag-distractors: n_distractors). Example: make_task("adding", 1000).
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    cls = TASKS[name]
    if length is None:
        return cls(**kwargs)
    if cls.default_length is None:
        raise ValueError(f"{name}: takes no length, got length={length!r}")
    return cls(length, **kwargs)
