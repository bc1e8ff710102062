"""Config validation: every bad field is named in the ValueError; the resolved form round-trips."""

import pytest
import torch

from cellstate.tasks import make_task
from cellstate.training.config import (
    DEFAULT_HIDDEN,
    DEFAULT_INPUT_GATE_BOUND,
    DEFAULT_LR,
    ModelConfig,
    RunConfig,
    TaskConfig,
    TrainingConfig,
    resolve_t_max,
)
from cellstate.training.model import SequenceModel


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: TaskConfig("no-such-task"), "task.name"),
        (lambda: TaskConfig("adding", -5), "task.length"),
        (lambda: TaskConfig("adding", 5), "task.length"),  # adding needs T >= 11
        (lambda: TaskConfig("reber", 10), "task.length"),  # reber takes no length
        (lambda: ModelConfig(kind="gru"), "model.kind"),
        (lambda: ModelConfig(hidden=0), "model.hidden"),
        (lambda: ModelConfig(init="xavier"), "model.init"),
        (lambda: ModelConfig(kind="rnn", init="chrono"), "model.init"),
        (lambda: ModelConfig(init="default", t_max=100.0), "model.t_max"),
        (lambda: ModelConfig(t_max=1.0), "model.t_max"),
        (lambda: ModelConfig(input_gate_bound=0.0), "model.input_gate_bound"),
        (lambda: ModelConfig(kind="rnn", input_gate_bound=1.0), "model.input_gate_bound"),
        (lambda: ModelConfig(output="tanh"), "model.output"),
        (lambda: ModelConfig(dtype="float16"), "model.dtype"),
        (lambda: TrainingConfig(optimizer="rmsprop"), "training.optimizer"),
        (lambda: TrainingConfig(lr=0.0), "training.lr"),
        (lambda: TrainingConfig(lr=float("nan")), "training.lr"),
        (lambda: TrainingConfig(lr_decay=0.0), "training.lr_decay"),
        (lambda: TrainingConfig(lr_decay=1.5), "training.lr_decay"),  # a decay, not a growth
        (lambda: TrainingConfig(lr_decay=float("nan")), "training.lr_decay"),
        (lambda: TrainingConfig(lr_patience=0), "training.lr_patience"),
        (lambda: TrainingConfig(momentum=0.9), "training.momentum"),  # Adam has no momentum
        (lambda: TrainingConfig(optimizer="sgd", momentum=1.0), "training.momentum"),
        (lambda: TrainingConfig(batch_size=0), "training.batch_size"),
        (lambda: TrainingConfig(batch_size=True), "training.batch_size"),
        (lambda: TrainingConfig(clip=-1.0), "training.clip"),
        (lambda: TrainingConfig(max_sequences=0), "training.max_sequences"),
        (lambda: TrainingConfig(eval_every=0), "training.eval_every"),
        (lambda: TrainingConfig(seed=-1), "training.seed"),
        (lambda: TrainingConfig(device="tpu"), "training.device"),
    ],
)
def test_bad_field_is_named(make, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        make()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_refused():
    with pytest.raises(ValueError, match=r"training\.device"):
        TrainingConfig(device="cuda")


def test_test_set_large_enough_for_the_criterion():
    with pytest.raises(ValueError, match=r"training\.test_size"):
        RunConfig(TaskConfig("reber"), training=TrainingConfig(test_size=100))


def test_defaults_are_valid_and_resolved():
    config = RunConfig(TaskConfig("adding", 100))
    assert config.model.init == "chrono"
    assert config.model.t_max == resolve_t_max(config.task.build()) == 140.0
    assert ModelConfig(kind="rnn").init == "default"
    assert config.model.input_gate_bound == DEFAULT_INPUT_GATE_BOUND
    assert ModelConfig(init="default").input_gate_bound is None  # torch's init, untouched


def test_a_config_from_before_input_gate_bound_reads_back_as_torchs_bound():
    data = RunConfig(TaskConfig("adding", 100), ModelConfig(hidden=16)).to_dict()
    del data["model"]["input_gate_bound"]
    assert RunConfig.from_dict(data).model.input_gate_bound == 0.25  # 1/sqrt(16)
    data["model"].update(init="default", t_max=None)
    assert RunConfig.from_dict(data).model.input_gate_bound is None


def test_round_trip_through_dict():
    config = RunConfig(
        TaskConfig("temporal-order", 50),
        ModelConfig(kind="rnn", hidden=7, init="orthogonal"),
        TrainingConfig(optimizer="sgd", lr=0.5, momentum=0.9, clip=0.0, seed=3, lr_decay=0.3),
    )
    assert RunConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["training"]["lr_decay"] == 0.3


def test_a_config_from_before_lr_decay_reads_back_as_a_constant_lr():
    data = RunConfig(TaskConfig("copy", 10)).to_dict()
    del data["training"]["lr_decay"], data["training"]["lr_patience"]
    assert RunConfig.from_dict(data).training.lr_decay == 1.0


def test_differences_ignore_the_budget():
    a = RunConfig(training=TrainingConfig(max_sequences=100, checkpoint_every=10))
    b = RunConfig(training=TrainingConfig(max_sequences=900, checkpoint_every=30))
    assert a.differences(b) == []
    c = RunConfig(model=ModelConfig(hidden=8), training=TrainingConfig(lr=0.5))
    assert a.differences(c) == ["model.hidden", "training.lr"]


def test_default_test_set_is_the_one_the_papers_criterion_uses():
    sizes = {
        name: RunConfig(TaskConfig(name)).training.test_size
        for name in ("two-sequence", "reber", "multiplication", "adding")
    }
    assert sizes == {"two-sequence": 256, "reber": 256, "multiplication": 2560, "adding": 2560}
    given = RunConfig(TaskConfig("two-sequence"), training=TrainingConfig(test_size=2560))
    assert given.training.test_size == 2560


def test_measured_per_task_defaults_and_explicit_flags_win():
    lr = {name: RunConfig(TaskConfig(name)).training.lr for name in ("adding", "two-sequence")}
    assert lr == {"adding": DEFAULT_LR, "two-sequence": 0.1}
    given = RunConfig(TaskConfig("two-sequence"), training=TrainingConfig(lr=0.01))
    assert given.training.lr == 0.01
    assert RunConfig(TaskConfig("two-sequence")).training.batch_size == 32


def test_hidden_is_resolved_per_task_and_an_explicit_one_wins():
    assert RunConfig(TaskConfig("copy", 100)).model.hidden == 128
    assert RunConfig(TaskConfig("copy", 100)).training.lr_decay == 0.3
    assert RunConfig(TaskConfig("adding", 100)).training.lr_decay == 1.0  # a constant lr
    given = RunConfig(TaskConfig("copy", 100), training=TrainingConfig(lr_decay=1.0))
    assert given.training.lr_decay == 1.0
    assert RunConfig(TaskConfig("adding", 100)).model.hidden == DEFAULT_HIDDEN == 32
    assert RunConfig(TaskConfig("copy", 100), ModelConfig(hidden=16)).model.hidden == 16
    assert RunConfig(TaskConfig("copy", 100)).to_dict()["model"]["hidden"] == 128
    # A model built from an unresolved ModelConfig takes the same per-task default.
    model = SequenceModel(ModelConfig(t_max=40.0), make_task("copy", 10))
    assert model.head.in_features == 128
    assert SequenceModel(ModelConfig(t_max=40.0), make_task("adding", 11)).head.in_features == 32
