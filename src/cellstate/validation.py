"""Checks for configuration fields, shared by every config dataclass's ``__post_init__``.

Each raises ValueError in one format, naming the field, what was expected and what came:

    training.lr must be a positive number; got 0.0
    hidden must be a positive integer; got 2.5
    model.kind must be one of lstm, rnn; got 'gru'

``name`` is whatever tells the user which field: "hidden", "training.lr", "adding: length".
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection
from typing import NoReturn


def fail(name: str, expected: str, value: object) -> NoReturn:
    """Raise the ValueError every check raises: ``NAME must be EXPECTED; got VALUE``."""
    raise ValueError(f"{name} must be {expected}; got {value!r}")


def integer(name: str, value: object, minimum: int = 1) -> None:
    """``value`` is an int (not a bool) >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        expected = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum)
        fail(name, expected or f"an integer >= {minimum}", value)


def number(
    name: str,
    value: object,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
) -> None:
    """``value`` is a finite real number (not a bool) with the given bounds: > above,
    >= at_least, < below."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if (
        not real
        or not math.isfinite(value)
        or (above is not None and not value > above)
        or (at_least is not None and not value >= at_least)
        or (below is not None and not value < below)
    ):
        fail(name, _number_expected(above, at_least, below), value)


def one_of(name: str, value: object, choices: Collection) -> None:
    """``value`` is one of ``choices``."""
    if value not in choices:
        fail(name, f"one of {', '.join(map(str, choices))}", value)


def time_steps(name: str, shape: tuple[int, ...], time_dim: int) -> None:
    """A sequence input of this shape has at least one time step along ``time_dim``
    (torch.nn.LSTM refuses T = 0 too)."""
    if shape[time_dim] < 1:
        fail(name, f"a sequence of at least one time step (dimension {time_dim})", shape)


def _number_expected(above: float | None, at_least: float | None, below: float | None) -> str:
    if (above, at_least, below) == (0, None, None):
        return "a positive number"
    if (above, at_least, below) == (None, 0, None):
        return "a non-negative number"
    if above is None and at_least is not None and below is not None:
        return f"in [{at_least:g}, {below:g})"
    bounds = [
        f"{sign} {bound:g}"
        for sign, bound in ((">", above), (">=", at_least), ("<", below))
        if bound is not None
    ]
    return " ".join(["a finite number", " and ".join(bounds)]).strip()
