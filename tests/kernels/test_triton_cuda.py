"""The Triton backend compiled for a CUDA GPU against the reference backend on the same GPU.

Skipped without a CUDA device (CPU CI: tests/kernels/test_triton.py runs the same kernels
through Triton's interpreter) and when TRITON_INTERPRET=1 is set in this process (run this file
on its own there: ``TRITON_INTERPRET=0 pytest tests/kernels/test_triton_cuda.py``, as
benchmarks/gpu_check.sh does). Sizes are small but past one program's block of rows and
columns, so that the grid and masking of the compiled kernels are exercised.
"""

import os

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import cellstate
from tests.differential import FLOAT64_BACKEND_WORST, assert_modules_match
from tests.kernels.test_cpu_modules import LSTM_VARIANTS, SameNoise, _assert_as_close_to_float64

if not torch.cuda.is_available():
    pytest.skip("no CUDA device: the compiled Triton kernels are not run", allow_module_level=True)
if os.environ.get("TRITON_INTERPRET") == "1":
    pytest.skip("TRITON_INTERPRET=1 in this process: run this file alone", allow_module_level=True)

CUDA = torch.device("cuda")
T, B, D, H = 7, 37, 5, 67  # 37 rows: several programs; 67 units: masked columns


def _pair(cls, dtype, **kwargs):
    ref = cls(D, H, backend="reference", dtype=dtype, device=CUDA, bidirectional=True, **kwargs)
    ours = cls(D, H, backend="triton", dtype=dtype, device=CUDA, bidirectional=True, **kwargs)
    ours.load_state_dict(ref.state_dict())
    return SameNoise(ours).train(), SameNoise(ref).train()


def _packed(dtype):
    x = torch.randn(T, B, D, dtype=dtype, device=CUDA)
    lengths = torch.randint(1, T + 1, (B,), generator=torch.Generator().manual_seed(0))
    lengths[0] = T
    return pack_padded_sequence(x, lengths, enforce_sorted=False)


@pytest.mark.parametrize("variant", list(LSTM_VARIANTS))
def test_lstm_float32_matches_reference(variant):
    """float32 on the GPU, anchored to the float64 reference like the CPU kernel's tests."""
    torch.backends.cuda.matmul.allow_tf32 = False
    ours, ref = _pair(cellstate.LSTM, torch.float32, **LSTM_VARIANTS[variant])
    _assert_as_close_to_float64(ours, ref, [_packed(torch.float32)])


def test_auto_uses_triton_on_cuda(monkeypatch):
    """What ``auto`` does once dispatch.AUTO_USES_TRITON is turned on after this file passes."""
    from cellstate.kernels import dispatch
    from cellstate.kernels.triton import backend

    monkeypatch.setattr(dispatch, "AUTO_USES_TRITON", True)
    assert dispatch.select("auto", torch.empty(1, device=CUDA)) is backend
    assert dispatch.select("auto", torch.empty(1, device=CUDA, dtype=torch.float64)) is not backend


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_float32_matches_reference(nonlinearity):
    torch.backends.cuda.matmul.allow_tf32 = False
    ours, ref = _pair(cellstate.RNN, torch.float32, nonlinearity=nonlinearity)
    _assert_as_close_to_float64(ours, ref, [_packed(torch.float32)])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_16_bit_is_as_close_to_float64_as_the_16_bit_reference(dtype):
    weights = cellstate.LSTM(D, H, dtype=torch.float64, layer_norm=True).state_dict()
    x = torch.randn(T, B, D, dtype=dtype, device=CUDA)
    results = []
    for backend, dt in (("triton", dtype), ("reference", dtype), ("reference", torch.float64)):
        lstm = cellstate.LSTM(D, H, backend=backend, dtype=dt, device=CUDA, layer_norm=True)
        lstm.load_state_dict({k: v.to(dtype).to(dt) for k, v in weights.items()})
        out, (_, c) = lstm(x.to(dt))
        (out.float().sum() + c.float().sum()).backward()
        results.append([out, *(q.grad for q in lstm.parameters())])

    def error(a, exact):
        return ((a.double() - exact).abs().max() / exact.abs().max()).item()

    ours, theirs, exact = results
    bar = 3 * max(error(b, e) for b, e in zip(theirs, exact, strict=True))
    for k, (a, e) in enumerate(zip(ours, exact, strict=True)):
        assert error(a, e) <= bar, f"result {k}: {error(a, e):.1e} > {bar:.1e}"


def test_gradients_are_bit_identical_run_to_run():
    lstm = cellstate.LSTM(D, H, backend="triton", device=CUDA, layer_norm=True, peephole=True)
    x = _packed(torch.float32)

    def grads():
        lstm.zero_grad()
        out, (h, c) = lstm(x)
        (out.data.sum() + c.sum()).backward()
        return [q.grad.clone() for q in lstm.parameters()]

    for a, b in zip(grads(), grads(), strict=True):
        assert torch.equal(a, b)


def test_float64_on_cuda_runs_the_reference():
    ours, ref = _pair(cellstate.LSTM, torch.float64, peephole=True)
    ours.module.backend = "auto"
    assert assert_modules_match(ours, ref, _packed(torch.float64)) < FLOAT64_BACKEND_WORST
