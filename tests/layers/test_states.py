"""return_states: every step's h, c and gates, for every layer, direction and input form."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import cellstate


def test_lstm_states_shapes_and_equations():
    lstm = cellstate.LSTM(3, 5, 2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(7, 4, 3, dtype=torch.float64)
    output, (h_n, c_n), s = lstm(x, return_states=True)
    for name in ("h", "c", "i", "f", "g", "o"):
        assert getattr(s, name).shape == (2, 2, 7, 4, 5), name
    # the last layer's h is the output; the final states are the last (first, reversed) steps
    torch.testing.assert_close(torch.cat([s.h[1, 0], s.h[1, 1]], -1), output)
    torch.testing.assert_close(s.h[1, 0, -1], h_n[2])
    torch.testing.assert_close(s.c[0, 1, 0], c_n[1])
    # the recorded gates obey the equations step by step
    c_prev = torch.cat([torch.zeros(2, 2, 1, 4, 5, dtype=x.dtype), s.c[:, :, :-1]], 2)
    torch.testing.assert_close(s.c[:, 0], (s.f * c_prev + s.i * s.g)[:, 0])
    torch.testing.assert_close(s.h, s.o * torch.tanh(s.c))
    assert ((s.i > 0) & (s.i < 1)).all() and ((s.g >= -1) & (s.g <= 1)).all()


def test_states_follow_the_input_layout():
    lstm = cellstate.LSTM(3, 5, batch_first=True, proj_size=2, return_states=True)
    _, _, s = lstm(torch.randn(4, 7, 3))
    assert s.h.shape == (1, 1, 4, 7, 2) and s.c.shape == (1, 1, 4, 7, 5)
    _, _, s = lstm(torch.randn(7, 3))
    assert s.h.shape == (1, 1, 7, 2) and s.o.shape == (1, 1, 7, 5)


def test_packed_states_are_zero_past_each_length():
    lstm = cellstate.LSTM(3, 5, bidirectional=True)
    lengths = torch.tensor([2, 6, 4])
    packed = pack_padded_sequence(torch.randn(6, 3, 3), lengths, enforce_sorted=False)
    _, (h_n, _), s = lstm(packed, return_states=True)
    assert s.c.shape == (1, 2, 6, 3, 5)
    for b, n in enumerate(lengths.tolist()):
        assert (s.c[:, :, n:, b] == 0).all() and (s.c[:, :, :n, b] != 0).all()
        torch.testing.assert_close(s.h[0, 0, n - 1, b], h_n[0, b])  # forward ends at its length
        torch.testing.assert_close(s.h[0, 1, 0, b], h_n[1, b])  # reverse ends at position 0


def test_no_forget_gate_records_f_as_ones():
    _, _, s = cellstate.LSTM(2, 3, forget_gate=False)(torch.randn(4, 2, 2), return_states=True)
    assert torch.equal(s.f, torch.ones_like(s.f))


@pytest.mark.parametrize("nonlinearity", ("tanh", "relu"))
def test_rnn_states(nonlinearity):
    rnn = cellstate.RNN(3, 5, 2, nonlinearity=nonlinearity, bidirectional=True)
    output, h_n, s = rnn(torch.randn(6, 2, 3), return_states=True)
    assert s.h.shape == (2, 2, 6, 2, 5) and s.c is None
    torch.testing.assert_close(torch.cat([s.h[1, 0], s.h[1, 1]], -1), output)
    torch.testing.assert_close(s.h[0, 0, -1], h_n[0])


def test_states_off_by_default_returns_torchs_structure():
    out = cellstate.LSTM(2, 3)(torch.randn(4, 2, 2))
    assert len(out) == 2 and len(out[1]) == 2
    assert len(cellstate.RNN(2, 3)(torch.randn(4, 2, 2))) == 2
