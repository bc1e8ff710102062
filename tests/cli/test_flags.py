"""Config dataclasses as flags (cli/flags.py): every flag of every subcommand has help, the train,
lm train and speech train flags cover their configs' fields with the configs' defaults and
types, and parsed flags give back the config."""

import argparse
import dataclasses

import pytest

from cellstate.cli import lm, speech, train
from cellstate.cli.flags import Flag, add_flags, boolean, flag_values
from cellstate.cli.main import build_parser
from cellstate.lm.train import LMTrainConfig
from cellstate.speech.train import SpeechTrainConfig
from cellstate.training.config import ModelConfig, RunConfig, TaskConfig, TrainingConfig


def _subcommands(parser: argparse.ArgumentParser, path=()):
    yield " ".join(path), parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subcommands(sub, (*path, name))


def test_every_flag_of_every_subcommand_has_help():
    commands = dict(_subcommands(build_parser()))
    assert {"train", "lm train", "speech train", "compare", "bench"} <= set(commands)
    for command, parser in commands.items():
        text = parser.format_help()  # raises if a help string does not format
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            name = action.option_strings or [action.dest]
            assert action.help, f"cellstate {command} {name[0]} has no help"
            assert name[0] in text or action.metavar in text


@pytest.mark.parametrize(
    ("tables", "configs", "not_flags"),
    [
        (
            (train.TASK_FLAGS, train.MODEL_FLAGS, train.TRAINING_FLAGS),
            (TaskConfig, ModelConfig, TrainingConfig),
            set(),
        ),
        ((lm.TRAIN_FLAGS,), (LMTrainConfig,), {"texts"}),  # --text: several paths, its own flag
        ((speech.TRAIN_FLAGS,), (SpeechTrainConfig,), set()),
    ],
)
def test_flag_tables_cover_every_config_field(tables, configs, not_flags):
    """A field added to a config without a flag (or a flag for a field that went) fails here."""
    for table, config in zip(tables, configs, strict=True):
        fields = {f.name for f in dataclasses.fields(config)}
        assert {flag.field for flag in table} == fields - not_flags, config


def test_train_without_flags_is_the_default_config():
    args = build_parser().parse_args(["train"])
    assert train.config_from_args(args) == RunConfig()


def test_train_flags_reach_their_fields():
    argv = ["train", "--task", "copy", "--length", "20", "--model", "rnn", "--init", "default"]
    argv += ["--optimizer", "sgd", "--momentum", "0.5", "--batch-size", "4", "--test-seed", "7"]
    config = train.config_from_args(build_parser().parse_args(argv))
    assert (config.task.name, config.task.length) == ("copy", 20)
    assert (config.model.kind, config.model.init) == ("rnn", "default")
    t = config.training
    assert (t.optimizer, t.momentum, t.batch_size, t.test_seed) == ("sgd", 0.5, 4, 7)


def test_given_only_flags_are_absent_unless_given():
    args = build_parser().parse_args(["speech", "train", "--layer-norm", "true", "--lr", "0.1"])
    assert flag_values(args, speech.TRAIN_FLAGS) == {"layer_norm": True, "lr": 0.1}
    assert flag_values(build_parser().parse_args(["lm", "train"]), lm.TRAIN_FLAGS) == {}


@dataclasses.dataclass
class _Config:
    count: int = 3
    rate: float | None = None
    name: str = "x"
    on: bool = False
    paths: tuple[str, ...] = ()


def test_types_and_defaults_come_from_the_dataclass():
    parser = argparse.ArgumentParser()
    flags = (
        Flag("count", "c"),
        Flag("rate", "r", shown="auto"),
        Flag("name", "n"),
        Flag("on", "o"),
    )
    add_flags(parser, _Config, flags)
    assert _Config(**flag_values(parser.parse_args([]), flags)) == _Config()
    args = parser.parse_args(["--count", "5", "--rate", "0.5", "--name", "y", "--on", "1"])
    assert _Config(**flag_values(args, flags)) == _Config(5, 0.5, "y", True)
    assert "c (default: 3)" in parser.format_help() and "r (default: auto)" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--count", "2.5"])


def test_a_field_without_a_flag_type_or_name_is_refused():
    with pytest.raises(TypeError, match=r"_Config\.paths: no flag type"):
        add_flags(argparse.ArgumentParser(), _Config, (Flag("paths", "p"),))
    with pytest.raises(TypeError, match="_Config has no field 'size' for --size"):
        add_flags(argparse.ArgumentParser(), _Config, (Flag("size", "s"),))


def test_boolean_accepts_true_false_1_0_only():
    assert [boolean(t) for t in ("true", "1", "false", "0")] == [True, True, False, False]
    with pytest.raises(argparse.ArgumentTypeError, match="expected true or false, got 'yes'"):
        boolean("yes")
