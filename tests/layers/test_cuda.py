"""The reference backend on CUDA: against torch.nn.LSTM/RNN (cuDNN) on copied weights and
against itself on the CPU. Skipped where no CUDA device exists (CI); run on a GPU machine."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import cellstate
from tests.differential import CUDA_VS_CPU, assert_modules_match

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@pytest.mark.parametrize("bidirectional", (False, True))
@pytest.mark.parametrize("proj_size", (0, 4))
def test_lstm_on_cuda_matches_cudnn_float64(bidirectional, proj_size):
    theirs = nn.LSTM(3, 16, 2, bidirectional=bidirectional, proj_size=proj_size)
    theirs = theirs.to("cuda", torch.float64)
    ours = cellstate.LSTM.from_torch(theirs)
    x = torch.randn(50, 4, 3, dtype=torch.float64, device="cuda")
    assert_modules_match(ours, theirs, x)
    lengths = torch.tensor([50, 7, 31, 1])
    assert_modules_match(ours, theirs, pack_padded_sequence(x, lengths, enforce_sorted=False))


def test_rnn_on_cuda_matches_cudnn_float64():
    theirs = nn.RNN(3, 16, 2, bidirectional=True).to("cuda", torch.float64)
    ours = cellstate.RNN(3, 16, 2, bidirectional=True).to("cuda", torch.float64)
    ours.load_state_dict(theirs.state_dict())
    assert_modules_match(ours, theirs, torch.randn(50, 4, 3, dtype=torch.float64, device="cuda"))


VARIANTS = {"peephole": True, "layer_norm": True, "forget_gate": False, "zoneout": 0.2}


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
def test_variants_on_cuda_match_cpu(dtype):
    cpu = cellstate.LSTM(3, 16, 2, bidirectional=True, dtype=dtype, **VARIANTS).eval()
    gpu = cellstate.LSTM(3, 16, 2, bidirectional=True, dtype=dtype, **VARIANTS).eval().cuda()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(30, 4, 3, dtype=dtype)
    tol = CUDA_VS_CPU[dtype]
    out_gpu, (h_gpu, c_gpu), s_gpu = gpu(x.cuda(), return_states=True)
    out_cpu, (h_cpu, c_cpu), s_cpu = cpu(x, return_states=True)
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, **tol)
    torch.testing.assert_close(c_gpu.cpu(), c_cpu, **tol)
    torch.testing.assert_close(s_gpu.f.cpu(), s_cpu.f, **tol)


def test_bfloat16_on_cuda_trains():
    lstm = cellstate.LSTM(3, 32, 2, layer_norm=True).to("cuda", torch.bfloat16)
    x = torch.randn(40, 8, 3, device="cuda", dtype=torch.bfloat16)
    out, _ = lstm(x)
    out.float().pow(2).mean().backward()
    assert out.dtype == torch.bfloat16
    assert all(p.grad is not None and p.grad.isfinite().all() for p in lstm.parameters())
