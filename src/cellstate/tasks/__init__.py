"""Seeded generators of the long-time-lag tasks of 1997 and their modern successors.

Example:
    task = make_task("adding", 100)
    batch = task.batch(32, torch.Generator().manual_seed(0))  # inputs (T, B, 2)
    loss = task.loss(outputs, batch)                          # outputs (T, B, 1)
"""

from cellstate.tasks.adding import AddingTask
from cellstate.tasks.adding_modern import AddingModernTask
from cellstate.tasks.base import Batch, FinalStepTask, Task
from cellstate.tasks.copy_memory import CopyTask
from cellstate.tasks.criterion import CriterionMonitor, StoppingCriterion
from cellstate.tasks.long_lag import LongLagTask
from cellstate.tasks.long_lag_distractors import LongLagDistractorsTask
from cellstate.tasks.multiplication import MultiplicationTask
from cellstate.tasks.reber import ReberTask
from cellstate.tasks.registry import TASKS, make_task
from cellstate.tasks.temporal_order import TemporalOrder3Task, TemporalOrderTask
from cellstate.tasks.two_sequence import (
    TwoSequenceNoisySignalTask,
    TwoSequenceNoisyTargetTask,
    TwoSequenceTask,
)

__all__ = [
    "TASKS",
    "AddingModernTask",
    "AddingTask",
    "Batch",
    "CopyTask",
    "CriterionMonitor",
    "FinalStepTask",
    "LongLagDistractorsTask",
    "LongLagTask",
    "MultiplicationTask",
    "ReberTask",
    "StoppingCriterion",
    "Task",
    "TemporalOrder3Task",
    "TemporalOrderTask",
    "TwoSequenceNoisySignalTask",
    "TwoSequenceNoisyTargetTask",
    "TwoSequenceTask",
    "make_task",
]
