"""bfloat16 and float16 on the CPU kernel: stored in half precision, computed in float32
(arithmetic, accumulation and the states across steps). Against the reference backend in float32
on the same rounded weights and inputs, within the half-precision tolerances of
tests/differential.py; each output and gradient keeps its tensor's dtype."""

import copy

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import cellstate
from cellstate.kernels import dispatch
from cellstate.kernels.cpu import ops as cpu
from tests.differential import flatten, scaled_tolerance
from tests.kernels.test_cpu_modules import LSTM_VARIANTS as CPU_MODULE_VARIANTS

T, B, D, H = 6, 3, 4, 5
HALF = [torch.bfloat16, torch.float16]
LSTM_VARIANTS = {
    "plain": {},
    "stacked": {"num_layers": 2, "bidirectional": True, "proj_size": 3},
    "everything": CPU_MODULE_VARIANTS["everything"],
}


def _results(module, x, packed: bool, cotangent_seed: int = 0, lengths=(6, 2, 4)):
    """Labelled outputs, then the gradients of x and of every parameter, for a fixed float32
    cotangent on every output (the masks of zoneout and dropout drawn from one seed); packed:
    the batch's sequences of these lengths."""
    x = x.detach().clone().requires_grad_()
    torch.manual_seed(1234)
    inp = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False) if packed else x
    outputs = flatten(module(inp))
    gen = torch.Generator().manual_seed(cotangent_seed)
    loss = sum(
        (out.float() * torch.randn(out.shape, generator=gen)).sum()
        for _, out in outputs
        if out.requires_grad
    )
    loss.backward()
    grads = [("grad x", x.grad)] + [(f"grad {n}", p.grad) for n, p in module.named_parameters()]
    return outputs + grads


def _assert_matches_float32_reference(module, x, packed: bool, dtype):
    reference = copy.deepcopy(module).float()
    reference.backend = "reference"
    ours = _results(module, x, packed)
    expected = _results(reference, x.float(), packed)
    for (name, a), (_, b) in zip(ours, expected, strict=True):
        assert a.dtype == (torch.int64 if b.dtype == torch.int64 else dtype), name
        tol = scaled_tolerance(dtype, b)
        torch.testing.assert_close(a.float(), b, **tol, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("packed", [False, True], ids=["tensor", "packed"])
@pytest.mark.parametrize("variant", list(LSTM_VARIANTS))
@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "f16"])
def test_lstm_half_precision_matches_float32_reference(dtype, variant, packed):
    module = cellstate.LSTM(D, H, backend="cpu", **LSTM_VARIANTS[variant]).to(dtype)
    _assert_matches_float32_reference(module, torch.randn(T, B, D).to(dtype), packed, dtype)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "f16"])
def test_rnn_half_precision_matches_float32_reference(dtype, nonlinearity):
    module = cellstate.RNN(
        D, H, num_layers=2, bidirectional=True, nonlinearity=nonlinearity, backend="cpu"
    ).to(dtype)
    _assert_matches_float32_reference(module, torch.randn(T, B, D).to(dtype), True, dtype)


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "f16"])
def test_auto_runs_half_precision_on_the_kernel(dtype):
    assert dispatch.select("auto", torch.randn(2, 1, 1, dtype=dtype)) is cpu


def test_float32_state_is_closer_to_float64_than_the_bfloat16_reference():
    """The kernel keeps c and h in float32 across steps; the bfloat16 reference rounds them at
    every step, so over 200 steps it drifts further from the exact result."""
    module = cellstate.LSTM(D, H, forget_bias=1.0).bfloat16()
    x = torch.randn(200, B, D).bfloat16()
    exact = copy.deepcopy(module).double()(x.double())[0]
    reference = copy.deepcopy(module)
    reference.backend = "reference"
    with torch.no_grad():
        ours_error = (module(x)[0].double() - exact).abs().max()
        reference_error = (reference(x)[0].double() - exact).abs().max()
    assert ours_error <= reference_error
