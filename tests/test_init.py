"""Initialisers: forget bias, chrono, input-gate weights, orthogonal."""

import math

import pytest
import torch

import cellstate
from cellstate.init import input_gate_weights_


def test_forget_bias_is_an_offset_on_the_forget_block_only():
    torch.manual_seed(0)
    plain = cellstate.LSTM(3, 8, 2)
    torch.manual_seed(0)
    biased = cellstate.LSTM(3, 8, 2, forget_bias=1.0)
    for layer in (0, 1):
        diff = getattr(biased, f"bias_ih_l{layer}") - getattr(plain, f"bias_ih_l{layer}")
        expected = torch.zeros(32)
        expected[8:16] = 1.0
        torch.testing.assert_close(diff, expected)
        assert torch.equal(
            getattr(biased, f"bias_hh_l{layer}"), getattr(plain, f"bias_hh_l{layer}")
        )


def test_chrono_biases():
    lstm = cellstate.LSTM(2, 512, init="chrono", t_max=100)
    b = lstm.bias_ih_l0 + lstm.bias_hh_l0
    b_i, b_f = b[:512], b[512:1024]
    assert (b_f >= 0).all() and (b_f <= math.log(99) + 1e-6).all()
    torch.testing.assert_close(b_i, -b_f)
    # log U(1, 99): the median of b_f is log(50)
    assert abs(b_f.median().item() - math.log(50)) < 0.2


def test_orthogonal_recurrent_blocks():
    lstm = cellstate.LSTM(2, 16, init=("orthogonal", "chrono"), t_max=20)
    for block in lstm.weight_hh_l0.chunk(4, 0):
        # A property, not a comparison of two implementations: Q^T Q = I up to float32 rounding.
        torch.testing.assert_close(block.T @ block, torch.eye(16), atol=1e-5, rtol=0)
    assert (lstm.bias_ih_l0[16:32] > 0).all()


def test_reset_parameters_reapplies_the_variant_init():
    lstm = cellstate.LSTM(2, 4, forget_bias=5.0, layer_norm=True)
    with torch.no_grad():
        for p in lstm.parameters():
            p.fill_(10.0)
    lstm.reset_parameters()
    assert (lstm.bias_ih_l0[4:8] > 4).all() and (lstm.bias_ih_l0[:4].abs() <= 0.5).all()
    assert torch.equal(lstm.layer_norm_ih_l0, torch.ones(16))
    assert torch.equal(lstm.layer_norm_c_bias_l0, torch.zeros(4))


def test_input_gate_weights_draw_only_the_input_gate_rows():
    torch.manual_seed(0)
    lstm = cellstate.LSTM(3, 64, init="chrono", t_max=100)
    weight = lstm.weight_ih_l0.detach().clone()
    input_gate_weights_(weight, 64, 2.0)
    gate = weight[:64]
    # U(-2, 2) over 192 draws: outside torch's bound 1/8 nearly everywhere, inside 2 everywhere.
    assert gate.abs().max() <= 2.0 and gate.abs().max() > 1.9
    assert (gate.abs() > 0.125).float().mean() > 0.8
    assert torch.equal(weight[64:], lstm.weight_ih_l0[64:])  # f, g, o rows untouched


def test_input_gate_weights_reject_a_non_positive_bound():
    with pytest.raises(ValueError, match="bound must be positive"):
        input_gate_weights_(torch.zeros(8, 2), 2, 0.0)
