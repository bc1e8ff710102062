"""Bad variant settings, NaN isolation, dtypes: loud errors naming the argument."""

import math

import pytest
import torch

import cellstate
from tests.differential import BFLOAT16_VS_FLOAT32

BAD_VARIANTS = {
    "zoneout 1": ({"zoneout": 1.0}, "zoneout"),
    "zoneout negative": ({"zoneout": -0.1}, "zoneout"),
    "zoneout triple": ({"zoneout": (0.1, 0.1, 0.1)}, "zoneout"),
    "recurrent_dropout 1": ({"recurrent_dropout": 1.0}, "recurrent_dropout"),
    "recurrent_dropout str": ({"recurrent_dropout": "0.1"}, "recurrent_dropout"),
    "chrono without t_max": ({"init": "chrono"}, "t_max"),
    "t_max too small": ({"init": "chrono", "t_max": 2}, "t_max"),
    "t_max without chrono": ({"t_max": 100}, "t_max"),
    "unknown init": ({"init": "xavier"}, "init"),
    "unknown backend": ({"backend": "cuda-magic"}, "backend"),
    "forget_bias without forget gate": ({"forget_gate": False, "forget_bias": 1.0}, "forget"),
    "chrono without biases": ({"init": "chrono", "t_max": 10, "bias": False}, "bias"),
    "peephole not bool": ({"peephole": 1}, "peephole"),
    "forget_bias not a number": ({"forget_bias": "1"}, "forget_bias"),
}


@pytest.mark.parametrize("case", sorted(BAD_VARIANTS))
def test_bad_variant_settings_raise_value_error_naming_the_argument(case):
    kwargs, name = BAD_VARIANTS[case]
    with pytest.raises(ValueError, match=name):
        cellstate.LSTM(3, 5, **kwargs)


def test_rnn_rejects_unknown_backend():
    with pytest.raises(ValueError, match="backend"):
        cellstate.RNN(3, 5, backend="fast")


@pytest.mark.parametrize("cls", (cellstate.LSTM, cellstate.RNN))
def test_nan_in_one_sequence_stays_in_that_sequence(cls):
    module = cls(3, 8, 2, bidirectional=True)
    x = torch.randn(10, 4, 3)
    x[5, 1, 0] = math.nan
    output, final = module(x)[:2]
    h_n = final[0] if isinstance(final, tuple) else final
    assert output[:, 1].isnan().any() and h_n[:, 1].isnan().any()
    others = [0, 2, 3]
    assert not output[:, others].isnan().any() and not h_n[:, others].isnan().any()


def test_bfloat16_runs_close_to_float32():
    lstm = cellstate.LSTM(3, 16, 2)
    x = torch.randn(20, 4, 3)
    expected = lstm(x)[0]
    got = lstm.to(torch.bfloat16)(x.to(torch.bfloat16))[0]
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, **BFLOAT16_VS_FLOAT32)


def test_initial_state_of_another_dtype_is_rejected():
    lstm = cellstate.LSTM(3, 5)
    h = torch.zeros(1, 2, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="dtype"):
        lstm(torch.randn(4, 2, 3), (h, h))


def test_hx_must_be_a_pair():
    with pytest.raises(TypeError, match="tuple"):
        cellstate.LSTM(3, 5)(torch.randn(4, 2, 3), torch.zeros(1, 2, 5))


@pytest.mark.parametrize("backend", ["auto", "reference", "cpu", "triton"])
@pytest.mark.parametrize("cls", (cellstate.LSTM, cellstate.RNN))
def test_input_without_time_steps_raises_value_error_on_every_backend(cls, backend):
    """T = 0 (torch.nn.LSTM refuses it too): one ValueError naming the input and its time
    dimension, before any backend runs (they failed with IndexError, or "stack expects a
    non-empty TensorList")."""
    inputs = {  # batch_first: input
        False: (torch.randn(0, 2, 3), torch.randn(0, 3)),
        True: (torch.randn(2, 0, 3), torch.randn(0, 3)),
    }
    for batch_first, xs in inputs.items():
        module = cls(3, 5, batch_first=batch_first, backend=backend)
        for x in xs:
            time_dim = 1 if x.dim() == 3 and batch_first else 0
            message = f"input must be a sequence of at least one time step \\(dimension {time_dim}"
            with pytest.raises(ValueError, match=message):
                module(x)
