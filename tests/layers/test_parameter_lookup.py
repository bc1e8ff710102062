"""cellstate.LSTM reads its parameters where Python's attribute look-up finds them, every call.

``LSTM._layer_params`` reads the module's dicts directly (not through ``Module.__getattr__``);
these check that it still sees what ``getattr`` would: a parametrization's value, a plain
tensor assigned in place of a parameter, a tied parameter and an in-place edit between calls.
"""

import dataclasses

import pytest
import torch
from torch.nn.utils import parametrize

import cellstate
from cellstate.kernels.params import LSTMLayerParams
from cellstate.layers.lstm import PARAM_NAMES

T, B, D, H = 5, 3, 4, 6


class Doubled(torch.nn.Module):
    def forward(self, w):
        return 2 * w


def _pair(backend):
    torch.manual_seed(0)
    ours = cellstate.LSTM(D, H, backend=backend).double()
    theirs = torch.nn.LSTM(D, H).double()
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def _assert_same(ours, theirs):
    x = torch.randn(T, B, D, dtype=torch.float64)
    out, (h, c) = ours(x)
    want, (h_want, c_want) = theirs(x)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(c, c_want)


def test_param_names_cover_every_tensor_field():
    fields = [f.name for f in dataclasses.fields(LSTMLayerParams) if f.name != "forget_gate"]
    assert list(PARAM_NAMES) == fields


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_parametrized_weight_is_used_and_gets_its_gradient(backend):
    ours, theirs = _pair(backend)
    parametrize.register_parametrization(ours, "weight_hh_l0", Doubled())
    with torch.no_grad():
        theirs.weight_hh_l0.mul_(2)
    _assert_same(ours, theirs)
    x = torch.randn(T, B, D, dtype=torch.float64)
    ours(x)[0].sum().backward()
    theirs(x)[0].sum().backward()
    original = ours.parametrizations.weight_hh_l0.original
    torch.testing.assert_close(original.grad, 2 * theirs.weight_hh_l0.grad)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_plain_tensor_in_place_of_a_parameter_is_used(backend):
    ours, theirs = _pair(backend)
    replacement = torch.randn(4 * H, H, dtype=torch.float64)
    del ours.bias_hh_l0
    ours.bias_hh_l0 = torch.zeros(4 * H, dtype=torch.float64)  # a plain tensor attribute
    del ours.weight_hh_l0
    ours.weight_hh_l0 = replacement
    with torch.no_grad():
        theirs.bias_hh_l0.zero_()
        theirs.weight_hh_l0.copy_(replacement)
    _assert_same(ours, theirs)


def test_tied_parameter_and_in_place_edits_are_seen_at_the_next_call():
    ours, theirs = _pair("cpu")
    other = cellstate.LSTM(D, H).double()
    ours.weight_ih_l0 = other.weight_ih_l0  # tied: one Parameter in two modules
    with torch.no_grad():
        theirs.weight_ih_l0.copy_(other.weight_ih_l0)
    _assert_same(ours, theirs)
    with torch.no_grad():
        other.weight_ih_l0.mul_(0.5)
        theirs.weight_ih_l0.mul_(0.5)
        ours.bias_ih_l0.data.add_(1.0)  # .data: no version counter bump
        theirs.bias_ih_l0.data.add_(1.0)
    _assert_same(ours, theirs)
