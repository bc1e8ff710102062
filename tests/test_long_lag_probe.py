"""benchmarks/long_lag_probe.py's hand-written truncated-gradient loop (the 1997 cell's gradient:
errors reach the past only through the cell state): its forward pass is the layer's, and its
gradient is full BPTT's exactly when the recurrent weights carry nothing."""

import importlib.util
from pathlib import Path

import pytest
import torch

import cellstate

ROOT = Path(__file__).resolve().parents[1]


def _probe():
    spec = importlib.util.spec_from_file_location("probe", ROOT / "benchmarks/long_lag_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    return probe


def _gradients(lstm, inputs, run):
    lstm.zero_grad()
    inputs = inputs.clone().requires_grad_()
    run(lstm, inputs)[-1].sum().backward()  # the last step's h
    return inputs.grad, lstm.weight_ih_l0.grad.clone()


@pytest.mark.parametrize("forget_gate", [True, False])
def test_truncated_loop_is_the_layer_forward_and_cuts_only_the_recurrent_path(forget_gate):
    truncated = _probe().truncated_lstm
    torch.manual_seed(0)
    lstm = cellstate.LSTM(3, 4, forget_gate=forget_gate, dtype=torch.float64, backend="reference")
    inputs = torch.randn(6, 2, 3, dtype=torch.float64)

    def full(layer, x):
        return layer(x)[0]

    torch.testing.assert_close(truncated(lstm, inputs), full(lstm, inputs))
    cut, bptt = _gradients(lstm, inputs, truncated), _gradients(lstm, inputs, full)
    assert not torch.allclose(cut[0][0], bptt[0][0])  # W_hh carries h_0 into later gates
    with torch.no_grad():
        lstm.weight_hh_l0.zero_()  # nothing flows through h: truncation changes nothing
    cut, bptt = _gradients(lstm, inputs, truncated), _gradients(lstm, inputs, full)
    for mine, reference in zip(cut, bptt, strict=True):
        torch.testing.assert_close(mine, reference)
