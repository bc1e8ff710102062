"""Command-line flags from a config dataclass, and parsed flags back into its fields.

A command lists the fields it exposes as `Flag`s (the help text, and a flag name or choices where
they differ from the field's); each flag's type and default come from the dataclass itself, so a
default changed there is the flag's default and the one ``--help`` shows.

    add_flags(parser, TrainConfig, FLAGS)            # --hidden (int, default: 256), ...
    TrainConfig(**flag_values(parser.parse_args(), FLAGS))
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass


@dataclass(frozen=True)
class Flag:
    """One config field as a command-line option.

    name: the option (default ``--field-name``); choices: the values argparse accepts; shown: what
    ``--help`` gives as the default where the field's own default (often None) means something
    it does not say.
    """

    field: str
    help: str
    name: str | None = None
    choices: tuple | None = None
    shown: str | None = None

    @property
    def option(self) -> str:
        return self.name or "--" + self.field.replace("_", "-")

    @property
    def dest(self) -> str:
        """The attribute of the parsed arguments: argparse's own, from the option's name."""
        return self.option.removeprefix("--").replace("-", "_")


def boolean(text: str) -> bool:
    """A flag's true/false value: 1, 0, true or false."""
    if text not in ("0", "1", "true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text in ("1", "true")


def add_flags(
    parser: argparse.ArgumentParser, config: type, flags: tuple[Flag, ...], *, given_only=False
) -> None:
    """Add one option per Flag for a field of the dataclass ``config``: typed by the field's
    annotation (int, float, str, or bool as true/false; ``X | None`` as X), defaulting to the
    field's default, with ``(default: ...)`` in its help. ``given_only``: a flag left out is absent
    from the parsed arguments (argparse.SUPPRESS), so that a resumed run can tell it from one
    given."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    hints = typing.get_type_hints(config)
    for flag in flags:
        if flag.field not in fields:
            raise TypeError(f"{config.__name__} has no field {flag.field!r} for {flag.option}")
        default = fields[flag.field].default
        if default is dataclasses.MISSING:
            raise TypeError(f"{config.__name__}.{flag.field} has no default for {flag.option}")
        shown = flag.shown if flag.shown is not None else default
        parser.add_argument(
            flag.option,
            type=_parse_type(config, flag.field, hints[flag.field]),
            choices=flag.choices,
            default=argparse.SUPPRESS if given_only else default,
            help=f"{flag.help} (default: {shown})".replace("%", "%%"),  # argparse formats %
        )


def add_step_run_flags(parser: argparse.ArgumentParser, run: str) -> None:
    """``--resume`` and ``--no-progress`` of the step-trained commands (lm train, speech train);
    ``run`` is how their help names the run directory."""
    parser.add_argument(
        "--resume",
        action="store_true",
        help=f"continue {run}/checkpoint.pt exactly; only --max-steps, --max-minutes, "
        "--eval-every, --checkpoint-every and --device may change",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def flag_values(args: argparse.Namespace, flags: tuple[Flag, ...]) -> dict:
    """``{field: value}`` of the flags in ``args`` (with ``given_only``, of those given)."""
    return {flag.field: getattr(args, flag.dest) for flag in flags if flag.dest in args}


def _parse_type(config: type, field: str, hint) -> typing.Callable[[str], object]:
    """The argparse type of a field annotated ``hint``."""
    if isinstance(hint, types.UnionType):  # X | None: a flag given is an X
        options = [t for t in typing.get_args(hint) if t is not type(None)]
        hint = options[0] if len(options) == 1 else hint
    if hint is bool:
        return boolean
    if hint in (int, float, str):
        return hint
    raise TypeError(f"{config.__name__}.{field}: no flag type for {hint!r}")
