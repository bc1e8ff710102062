"""torch.jit.trace, jit.save / jit.load and torch.jit.script of cellstate layers.

A traced module records the kernel's custom ops, so it must give eager's outputs and gradients
on inputs of other lengths and batch sizes than the example it was traced with, whatever the
grad mode at trace time, and after a save / load round trip.
"""

import contextlib
import io

import pytest
import torch

import cellstate
from tests.differential import EXACT, assert_modules_match, tolerance

D, H = 3, 5
GRAD_MODES = {
    "grad": contextlib.nullcontext,
    "no_grad": torch.no_grad,
    "inference_mode": torch.inference_mode,
}
MODULES = {
    "lstm": lambda: cellstate.LSTM(D, H, backend="cpu"),
    "lstm_reference": lambda: cellstate.LSTM(D, H, backend="reference"),
    "lstm_stacked_bidirectional": lambda: cellstate.LSTM(
        D, H, num_layers=2, bidirectional=True, batch_first=True
    ),
    "lstm_variants": lambda: cellstate.LSTM(
        D, H, proj_size=2, peephole=True, layer_norm=True, zoneout=0.2, forget_gate=False
    ),
    "rnn_bidirectional_relu": lambda: cellstate.RNN(D, H, bidirectional=True, nonlinearity="relu"),
}


def _round_trip(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


@pytest.mark.parametrize("grad_mode", GRAD_MODES)
@pytest.mark.parametrize("name", MODULES)
def test_traced_module_matches_eager_on_new_shapes_after_save_and_load(name, grad_mode):
    module = MODULES[name]().eval()
    with GRAD_MODES[grad_mode]():
        traced = torch.jit.trace(module, (torch.randn(4, 2, D),))
    loaded = _round_trip(traced)
    for T, B in ((7, 3), (2, 1)):
        x = torch.randn(T, B, D)
        assert_modules_match(loaded, module, x)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), module(x), **tolerance(torch.float32))


def test_traced_lstm_takes_initial_states_of_a_new_batch_size():
    module = cellstate.LSTM(D, H, num_layers=2)
    example = (torch.randn(4, 2, D), (torch.randn(2, 2, H), torch.randn(2, 2, H)))
    loaded = _round_trip(torch.jit.trace(module, example))
    x, state = torch.randn(6, 5, D), (torch.randn(2, 5, H), torch.randn(2, 5, H))
    assert_modules_match(loaded, module, x, state)


def test_traced_zoneout_draws_fresh_masks_as_eager_does():
    """In training, zoneout's masks are drawn at every call of the traced module (not frozen
    into the trace) and equal eager's under the same seed."""
    module = cellstate.LSTM(D, H, zoneout=0.3).train()
    loaded = _round_trip(torch.jit.trace(module, (torch.randn(4, 2, D),), check_trace=False))
    x = torch.randn(7, 3, D)
    assert not torch.equal(loaded(x)[0], loaded(x)[0])
    torch.manual_seed(5)
    eager = module(x)[0]
    torch.manual_seed(5)
    torch.testing.assert_close(loaded(x)[0], eager, **EXACT)


@pytest.mark.parametrize("cls", [cellstate.LSTM, cellstate.RNN])
def test_jit_script_raises_an_error_naming_the_alternatives(cls):
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = cls(D, H)

        def forward(self, x):
            return self.rnn(x)[0]

    for target in (cls(D, H), Model()):
        with pytest.raises(NotImplementedError, match="torch.jit.script.*torch.jit.trace"):
            torch.jit.script(target)


def test_tracing_input_the_kernel_cannot_take_raises_naming_the_alternatives():
    module = cellstate.LSTM(D, H, device="meta")
    with pytest.raises(NotImplementedError, match="torch.jit.trace.*torch.export.export"):
        torch.jit.trace(module, (torch.randn(4, 2, D, device="meta"),))
