"""Config validation: every bad field is named in the ValueError; the resolved form round-trips."""

import pytest
import torch

from cellstate.tasks import make_task
from cellstate.training.config import (
    DEFAULT_ADAM_BETA2,
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

TWO_SEQUENCE = ("two-sequence", "two-sequence-3b", "two-sequence-3c")


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: TaskConfig("no-such-task"), "task.name"),
        (lambda: TaskConfig("adding", -5), "task.length"),
        (lambda: TaskConfig("adding", 5), "task.length"),  # adding needs T >= 11
        (lambda: TaskConfig("reber", 10), "task.length"),  # reber takes no length
        (lambda: TaskConfig("two-sequence", 100, 0), "task.n_informative"),
        (lambda: TaskConfig("two-sequence-3b", 100, True), "task.n_informative"),
        (lambda: TaskConfig("adding", 100, 3), "task.n_informative"),  # adding takes no N
        (lambda: ModelConfig(kind="gru"), "model.kind"),
        (lambda: ModelConfig(hidden=0), "model.hidden"),
        (lambda: ModelConfig(init="xavier"), "model.init"),
        (lambda: ModelConfig(kind="rnn", init="chrono"), "model.init"),
        (lambda: ModelConfig(init="default", t_max=100.0), "model.t_max"),
        (lambda: ModelConfig(t_max=1.0), "model.t_max"),
        (lambda: ModelConfig(input_gate_bound=0.0), "model.input_gate_bound"),
        (lambda: ModelConfig(kind="rnn", input_gate_bound=1.0), "model.input_gate_bound"),
        (lambda: ModelConfig(output="tanh"), "model.output"),
        (lambda: ModelConfig(input_to_output=1), "model.input_to_output"),
        (lambda: ModelConfig(zero_head="yes"), "model.zero_head"),
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
        (lambda: TrainingConfig(adam_beta2=1.0), "training.adam_beta2"),
        (lambda: RunConfig(training=TrainingConfig("sgd", adam_beta2=0.9)), "training.adam_beta2"),
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


def test_a_config_from_before_long_lags_defaults_reads_back_as_it_ran():
    for task, output in (("long-lag", "sigmoid"), ("copy", "auto"), ("adding", "auto")):
        data = RunConfig(TaskConfig(task, 100)).to_dict()
        for name in ("input_to_output", "zero_head"):
            del data["model"][name]
        data["model"]["output"] = "auto"  # what every run wrote then
        del data["training"]["adam_beta2"]
        config = RunConfig.from_dict(data)
        model = config.model
        assert (model.input_to_output, model.zero_head, model.output) == (False, False, output)
        assert config.training.adam_beta2 == DEFAULT_ADAM_BETA2
        # Where the defaults did not change, the run resumes with the default flags.
        changed = config.differences(RunConfig(TaskConfig(task, 100)))
        assert changed == (
            ["model.output", "model.input_to_output", "model.zero_head", "training.adam_beta2"]
            if task == "long-lag"
            else []
        )


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
    assert a.differences(c) == ["model.hidden", "training.lr", "training.lr_min"]  # lr * decay**2


def test_lr_min_defaults_to_two_cuts_and_is_checked():
    assert RunConfig(TaskConfig("copy", 100)).training.lr_min == 0.01 * 0.3**2
    assert RunConfig(training=TrainingConfig(lr=0.02)).training.lr_min == 0.02  # no decay
    assert RunConfig(training=TrainingConfig(lr_min=0.0)).training.lr_min == 0.0
    with pytest.raises(ValueError, match="training.lr_min"):
        TrainingConfig(lr_min=-1.0)
    with pytest.raises(ValueError, match=r"lr_min must be at most the lr \(0.01\); got 0.1"):
        RunConfig(training=TrainingConfig(lr_min=0.1))


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


def test_long_lags_defaults_reach_the_model_and_adam_and_flags_win():
    config = RunConfig(TaskConfig("long-lag", 100))
    model = config.model
    assert (model.output, model.input_to_output, model.zero_head) == ("linear", True, True)
    assert (config.training.adam_beta2, config.training.batch_size) == (0.9, 4)
    adding = RunConfig(TaskConfig("adding", 100))
    model = adding.model
    assert (model.output, model.input_to_output, model.zero_head) == ("auto", False, False)
    assert adding.training.adam_beta2 == DEFAULT_ADAM_BETA2
    given = RunConfig(
        TaskConfig("long-lag", 100),
        ModelConfig(output="sigmoid", input_to_output=False, zero_head=False),
        TrainingConfig(adam_beta2=0.99),
    )
    model = given.model
    assert (model.output, model.input_to_output, model.zero_head) == ("sigmoid", False, False)
    assert given.training.adam_beta2 == 0.99
    assert (
        RunConfig(TaskConfig("long-lag", 100), training=TrainingConfig("sgd")).training.adam_beta2
        is None
    )


def test_two_sequence_n_informative_resolves_round_trips_and_reads_back_from_old_configs():
    assert TaskConfig("two-sequence").n_informative == 3  # the task's default, written down
    assert TaskConfig("adding").n_informative is None
    config = RunConfig(TaskConfig("two-sequence-3c", 100, 1))
    assert config.task.build().n_informative == 1
    assert RunConfig.from_dict(config.to_dict()) == config
    old = RunConfig(TaskConfig("two-sequence", 100)).to_dict()
    del old["task"]["n_informative"]  # config.json of a run from before the field
    assert RunConfig.from_dict(old).task == TaskConfig("two-sequence", 100, 3)
    assert RunConfig.from_dict(old).differences(RunConfig(TaskConfig("two-sequence", 100))) == []
    n1 = RunConfig(TaskConfig("two-sequence", 100, 1))
    assert n1.differences(RunConfig(TaskConfig("two-sequence", 100))) == ["task.n_informative"]


def test_two_sequence_3b_and_3c_keep_the_general_lr_and_the_papers_test_set():
    lr = {name: RunConfig(TaskConfig(name)).training.lr for name in TWO_SEQUENCE}
    assert lr == {"two-sequence": 0.1, "two-sequence-3b": DEFAULT_LR, "two-sequence-3c": DEFAULT_LR}
    assert {RunConfig(TaskConfig(name)).training.test_size for name in TWO_SEQUENCE} == {256}


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
