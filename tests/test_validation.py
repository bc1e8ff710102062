"""The config checks: one message format (field, what was expected, what came) and no value of the
wrong kind let through (bools, NaN, infinities, strings)."""

import math

import pytest

from cellstate.validation import integer, number, one_of


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (lambda: integer("hidden", 0), "hidden must be a positive integer; got 0"),
        (lambda: integer("seed", -1, 0), "seed must be a non-negative integer; got -1"),
        (
            lambda: integer("adding: length", 5, 11),
            "adding: length must be an integer >= 11; got 5",
        ),
        (lambda: integer("batch", True), "batch must be a positive integer; got True"),
        (lambda: integer("batch", 2.0), "batch must be a positive integer; got 2.0"),
        (lambda: number("lr", 0.0, above=0), "lr must be a positive number; got 0.0"),
        (lambda: number("clip", -1, at_least=0), "clip must be a non-negative number; got -1"),
        (lambda: number("dropout", 1.0, at_least=0, below=1), "dropout must be in [0, 1); got 1.0"),
        (lambda: number("t_max", 2.0, above=2), "t_max must be a finite number > 2; got 2.0"),
        (lambda: number("lr", math.nan, above=0), "lr must be a positive number; got nan"),
        (lambda: number("bias", math.inf), "bias must be a finite number; got inf"),
        (lambda: number("lr", "0.1", above=0), "lr must be a positive number; got '0.1'"),
        (lambda: number("lr", False), "lr must be a finite number; got False"),
        (
            lambda: one_of("model.kind", "gru", ("lstm", "rnn")),
            "model.kind must be one of lstm, rnn; got 'gru'",
        ),
    ],
)
def test_bad_values_are_named_with_what_was_expected(check, message):
    with pytest.raises(ValueError) as error:
        check()
    assert str(error.value) == message


def test_good_values_pass():
    integer("hidden", 1)
    integer("seed", 0, 0)
    number("dropout", 0, at_least=0, below=1)
    number("lr", 1e-3, above=0)
    number("bias", -3.5)
    one_of("kind", "rnn", ("lstm", "rnn"))
