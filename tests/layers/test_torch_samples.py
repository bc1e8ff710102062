"""PyTorch's own sample and error inputs for nn.LSTM and nn.RNN, run against cellstate."""

import re

import pytest
import torch
from torch import nn
from torch.testing._internal.common_modules import (
    ModuleErrorEnum,
    module_error_inputs_torch_nn_RNN_GRU,
    module_inputs_torch_nn_LSTM,
    module_inputs_torch_nn_RNN_GRU,
)

import cellstate
from tests.differential import assert_modules_match

LSTM_SAMPLES = module_inputs_torch_nn_LSTM(None, "cpu", torch.float64, True, True)
RNN_SAMPLES = module_inputs_torch_nn_RNN_GRU(
    None, "cpu", torch.float64, True, True, is_rnn=True, with_packed_sequence=True
)
ERROR_SAMPLES = module_error_inputs_torch_nn_RNN_GRU(None, "cpu", torch.float32, False, True)


def _pair(torch_cls, ours_cls, sample):
    args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
    theirs = torch_cls(*args, **kwargs, dtype=torch.float64)
    ours = ours_cls(*args, **kwargs, dtype=torch.float64)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def test_the_sample_lists_are_not_empty():
    assert len(LSTM_SAMPLES) >= 32 and len(RNN_SAMPLES) >= 64 and len(ERROR_SAMPLES) >= 10


@pytest.mark.parametrize("sample", LSTM_SAMPLES)
def test_torch_lstm_samples(sample):
    ours, theirs = _pair(nn.LSTM, cellstate.LSTM, sample)
    assert_modules_match(ours, theirs, *sample.forward_input.args)


@pytest.mark.parametrize("sample", RNN_SAMPLES)
def test_torch_rnn_samples(sample):
    ours, theirs = _pair(nn.RNN, cellstate.RNN, sample)
    assert_modules_match(ours, theirs, *sample.forward_input.args)


@pytest.mark.parametrize("cls", (cellstate.LSTM, cellstate.RNN))
@pytest.mark.parametrize("error", ERROR_SAMPLES, ids=lambda e: e.error_regex[:40])
def test_torch_error_samples(cls, error):
    sample = error.module_error_input
    args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
    if error.error_on == ModuleErrorEnum.CONSTRUCTION_ERROR:
        with pytest.raises(error.error_type, match=error.error_regex):
            cls(*args, **kwargs)
    else:
        module = cls(*args, **kwargs)
        with pytest.raises(error.error_type, match=error.error_regex):
            module(*sample.forward_input.args, **sample.forward_input.kwargs)


def _raises_like_torch(make, call):
    """Both torch's module and ours raise, with the same type and message."""
    outcomes = []
    for cls in make:
        with pytest.raises(Exception) as info:
            call(cls)
        outcomes.append((type(info.value), str(info.value)))
    assert outcomes[0] == outcomes[1], outcomes


BAD_FORWARDS = {
    "wrong input size": lambda m: m(torch.randn(5, 2, 4)),
    "wrong h0 batch": lambda m: m(torch.randn(5, 2, 3), _hx(m, 3)),
    "wrong h0 dims": lambda m: m(torch.randn(5, 2, 3), _hx(m, 2, dims=2)),
    "unbatched with 3-D h0": lambda m: m(torch.randn(5, 3), _hx(m, 1)),
    "4-D input": lambda m: m(torch.randn(5, 2, 3, 1)),
    "integer input": lambda m: m(torch.ones(5, 2, 3, dtype=torch.long)),
    "float64 input": lambda m: m(torch.randn(5, 2, 3, dtype=torch.float64)),
}


def _hx(module, batch, dims=3):
    shape = (module.num_layers, batch, module.hidden_size)[3 - dims :]
    h = torch.zeros(shape)
    return (h, h) if isinstance(module, nn.LSTM | cellstate.LSTM) else h


@pytest.mark.parametrize("case", sorted(BAD_FORWARDS))
@pytest.mark.parametrize("pair", ((nn.LSTM, cellstate.LSTM), (nn.RNN, cellstate.RNN)))
def test_bad_forward_input_raises_like_torch(case, pair):
    _raises_like_torch([cls(3, 5) for cls in pair], BAD_FORWARDS[case])


BAD_CONSTRUCTORS = {
    "hidden 0": ((3, 0), {}),
    "input 0": ((0, 5), {}),
    "layers 0": ((3, 5, 0), {}),
    "dropout 1.5": ((3, 5), {"dropout": 1.5}),
    "dropout -0.1": ((3, 5), {"dropout": -0.1}),
    "dropout bool": ((3, 5), {"dropout": True}),
    "hidden float": ((3, 5.0), {}),
}


@pytest.mark.parametrize("case", sorted(BAD_CONSTRUCTORS))
@pytest.mark.parametrize("pair", ((nn.LSTM, cellstate.LSTM), (nn.RNN, cellstate.RNN)))
def test_bad_constructor_raises_like_torch(case, pair):
    args, kwargs = BAD_CONSTRUCTORS[case]
    _raises_like_torch(pair, lambda cls: cls(*args, **kwargs))


@pytest.mark.parametrize("proj_size", (-1, 5, 7))
def test_bad_proj_size_raises_like_torch(proj_size):
    _raises_like_torch((nn.LSTM, cellstate.LSTM), lambda cls: cls(3, 5, proj_size=proj_size))


def test_rnn_rejects_proj_size_and_unknown_nonlinearity_like_torch():
    _raises_like_torch((nn.RNN, cellstate.RNN), lambda cls: cls(3, 5, proj_size=2))
    _raises_like_torch((nn.RNN, cellstate.RNN), lambda cls: cls(3, 5, nonlinearity="sigmoid"))


def test_dropout_with_one_layer_warns_like_torch():
    with pytest.warns(UserWarning, match=re.escape("non-zero dropout expects num_layers")):
        cellstate.LSTM(3, 5, dropout=0.3)
