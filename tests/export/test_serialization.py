"""Whole models holding cellstate layers: torch.load(weights_only=True), and
torch.ao.quantization.quantize_dynamic (which leaves the layers in float, and says so)."""

import io

import pytest
import torch
from torch import nn

import cellstate
from tests.differential import EXACT

D, H = 3, 5


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = cellstate.LSTM(D, H, num_layers=2, peephole=True, zoneout=0.1)
        self.rnn = cellstate.RNN(2 * H, H, bidirectional=True, nonlinearity="relu")
        self.head = nn.Linear(2 * H, 2)

    def forward(self, x):
        out, _ = self.lstm(x)
        out = torch.cat([out, out], -1)
        return self.head(self.rnn(out)[0])


def _saved(model: nn.Module) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return buffer


def _assert_same_model(loaded: nn.Module, model: nn.Module) -> None:
    assert type(loaded.lstm) is cellstate.LSTM and type(loaded.rnn) is cellstate.RNN
    x = torch.randn(6, 2, D)
    torch.testing.assert_close(loaded.eval()(x), model.eval()(x), **EXACT)


def test_weights_only_load_needs_only_the_allowlist_torch_nn_lstm_needs():
    """Code that allowlists its model and torch.nn.LSTM loads cellstate layers unchanged."""
    model = Model()
    with torch.serialization.safe_globals([Model, nn.Linear, nn.LSTM]):
        loaded = torch.load(_saved(model), weights_only=True)
    _assert_same_model(loaded, model)


def test_weights_only_load_with_the_explicit_allowlist():
    model = Model()
    with torch.serialization.safe_globals([Model, nn.Linear, *cellstate.safe_globals()]):
        loaded = torch.load(_saved(model), weights_only=True)
    _assert_same_model(loaded, model)


@pytest.mark.parametrize("spec", [None, {cellstate.LSTM, cellstate.RNN, nn.Linear}])
def test_quantize_dynamic_warns_that_cellstate_layers_stay_in_float(spec):
    model = Model().eval()
    x = torch.randn(6, 2, D)
    with pytest.warns(UserWarning, match=r"cellstate.LSTM is left in float.*quantize_dynamic"):
        quantized = torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8)
    assert type(quantized.lstm) is cellstate.LSTM
    assert type(quantized.head) is not nn.Linear  # the rest is quantized as asked
    assert not hasattr(quantized.lstm, "qconfig")  # removed again after conversion
    torch.testing.assert_close(quantized.lstm(x), model.lstm(x), **EXACT)
