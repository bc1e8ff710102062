"""Gate traces and heatmaps: shapes, marked steps, the image, and a trained checkpoint."""

import matplotlib.image
import pytest
import torch

from cellstate.diagnostics.gates import (
    gate_heatmaps,
    gate_trace,
    marker_steps,
    trace_from_checkpoint,
)
from cellstate.diagnostics.models import build_model
from cellstate.tasks import make_task
from cellstate.training.config import ModelConfig, RunConfig, TaskConfig, TrainingConfig
from cellstate.training.trainer import Trainer


def config(task: str, length: int, kind: str = "lstm") -> RunConfig:
    return RunConfig(
        TaskConfig(task, length),
        ModelConfig(kind=kind, hidden=6),
        TrainingConfig(max_sequences=64, eval_every=64, test_size=256, checkpoint_every=64),
    )


@pytest.mark.parametrize("task_name", ["adding", "temporal-order"])
def test_trace_shapes_and_markers(task_name):
    run = config(task_name, 20)
    task = run.task.build()
    batch = task.batch(3, torch.Generator().manual_seed(1))
    trace = gate_trace(build_model(run), task, batch, index=2)
    T = int(batch.lengths[2])
    for name in ("i", "f", "o", "c"):
        assert getattr(trace, name).shape == (T, 6), name
    for gate in (trace.i, trace.f, trace.o):
        assert torch.all((gate > 0) & (gate < 1))
    # Two marked values (adding) or two X/Y symbols (temporal order), inside the sequence.
    assert len(trace.markers) == 2 and all(0 <= s < T for s in trace.markers)
    assert trace.markers == marker_steps(task, batch.inputs[:T, 2])
    assert len(trace.output) == task.output_size == len(trace.target)


def test_3c_trace_shows_the_target_the_model_is_trained_on():
    run = config("two-sequence-3c", 20)
    task = run.task.build()
    batch = task.batch(3, torch.Generator().manual_seed(1))
    trace = gate_trace(build_model(run), task, batch, index=2)
    # targets (B, 2): the noisy target the loss uses, then the noise-free one (not an output)
    assert trace.target == [batch.targets[2, 0].item()] and len(trace.output) == 1


def test_traced_output_is_the_models_last_output_with_an_input_to_output_connection():
    run = config("long-lag", 8)  # its defaults: a linear head that also reads the input
    assert run.model.input_to_output
    task, model = run.task.build(), build_model(run)
    with torch.no_grad():  # the head starts at zero: give the hidden state a say
        model.head.weight.normal_(generator=torch.Generator().manual_seed(0))
    batch = task.batch(2, torch.Generator().manual_seed(1))
    trace = gate_trace(model, task, batch, index=1)
    with torch.no_grad():
        expected = model(batch.inputs)[-1, 1]
    torch.testing.assert_close(torch.tensor(trace.output), expected)


def test_adding_markers_are_the_marked_pairs():
    task = make_task("adding", 12)
    inputs = torch.zeros(12, 2)
    inputs[[0, 11], 1] = -1  # the end markers are not what the task asks to remember
    inputs[[3, 7], 1] = 1
    assert marker_steps(task, inputs) == [3, 7]


def test_heatmap_image(tmp_path):
    run = config("adding", 15)
    task = run.task.build()
    trace = gate_trace(build_model(run), task, task.batch(1, torch.Generator().manual_seed(0)))
    path = tmp_path / "gates.png"
    gate_heatmaps(trace).savefig(path, dpi=50)
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_trace_from_a_trained_checkpoint(tmp_path):
    Trainer(config("adding", 12), tmp_path, progress=False).run()
    trace = trace_from_checkpoint(tmp_path / "checkpoint.pt", seed=3)
    assert trace.task == "adding" and trace.c.shape[1] == 6 and len(trace.markers) == 2


def test_rnn_has_no_gates():
    run = config("adding", 12, kind="rnn")
    task = run.task.build()
    with pytest.raises(TypeError, match="need an LSTM"):
        gate_trace(build_model(run), task, task.batch(1, torch.Generator()))
