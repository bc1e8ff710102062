"""The Triton plain RNN as torch.library custom ops ``cellstate::triton_rnn_forward`` and
``cellstate::triton_rnn_backward``: per step one GEMM and one Triton kernel each way; dW_hh as
one GEMM after the loop. xa = x W_ih^T + b_ih + b_hh (T, B, H) is formed before the op with
torch ops (autograd gives dW_ih, dx and the biases from d xa)."""

from __future__ import annotations

import torch
from torch import Tensor

from cellstate.kernels.triton import launch
from cellstate.kernels.triton.lstm_ops import DOUBLE_BACKWARD


@torch.library.custom_op("cellstate::triton_rnn_forward", mutates_args=())
def rnn_forward(
    xa: Tensor, h0: Tensor, w_hh: Tensor, lengths: Tensor | None, relu: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """xa (T, B, H) compute dtype, h0 (B, H). Returns output (T, B, H), h_all (T+1, B, H)
    (compute dtype: h0 then each step's state) and hin (T, B, H), the GEMM inputs."""
    output, h_all, hin = _rnn_forward_fake(xa, h0, w_hh, lengths, relu)
    k = launch.kernels("rnn_kernels")
    T, B, H = xa.shape
    block_b, block_h, grid = launch.blocks(B, H, slots=1)
    h_all[0] = h0
    hin[0] = h0
    hw = hin.new_empty(B, H)
    for t in range(T):
        torch.mm(hin[t], w_hh.t(), out=hw)
        k.rnn_forward_step[grid](
            t, B, H, xa, hw, h_all, hin, output, xa if lengths is None else lengths,
            RELU=relu, LENGTHS=lengths is not None, WRITE_HIN=t + 1 < T, BLOCK_B=block_b,
            BLOCK_H=block_h,
        )  # fmt: skip
    return output, h_all, hin


@rnn_forward.register_fake
def _rnn_forward_fake(xa, h0, w_hh, lengths, relu):
    T, B, H = xa.shape
    low = w_hh.dtype
    return (
        xa.new_empty(T, B, H, dtype=low),
        xa.new_empty(T + 1, B, H),
        xa.new_empty(T, B, H, dtype=low),
    )


@torch.library.custom_op("cellstate::triton_rnn_backward", mutates_args=())
def rnn_backward(
    d_output: Tensor | None,
    d_h_all: Tensor | None,
    h0: Tensor,
    h_all: Tensor,
    hin: Tensor,
    w_hh: Tensor,
    lengths: Tensor | None,
    relu: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """BPTT: the gradients of xa (T, B, H), h0 and w_hh."""
    d_xa, dh0, dw_hh = _rnn_backward_fake(d_output, d_h_all, h0, h_all, hin, w_hh, lengths, relu)
    k = launch.kernels("rnn_kernels")
    T, B, H = hin.shape
    block_b, block_h, grid = launch.blocks(B, H, slots=1)
    d_output = launch.contiguous_or_none(d_output)
    d_h_all = launch.contiguous_or_none(d_h_all)
    dh_carry = h_all.new_zeros(B, H)
    dh_gemm = hin.new_empty(B, H)
    da_low = hin.new_empty(T, B, H)
    for t in reversed(range(T)):
        k.rnn_backward_step[grid](
            t, B, H, d_xa if d_output is None else d_output,
            d_xa if d_h_all is None else d_h_all, dh_carry, dh_gemm, h_all, d_xa, da_low,
            d_xa if lengths is None else lengths, RELU=relu, LENGTHS=lengths is not None,
            HAS_GEMM=t + 1 < T, HAS_DOUT=d_output is not None, HAS_DH_ALL=d_h_all is not None,
            BLOCK_B=block_b, BLOCK_H=block_h,
        )  # fmt: skip
        torch.mm(da_low[t], w_hh, out=dh_gemm)
    dh0.copy_(dh_carry + dh_gemm + (0 if d_h_all is None else d_h_all[0]))
    dw_hh.copy_(da_low.view(T * B, H).t() @ hin.view(T * B, H))
    return d_xa, dh0, dw_hh


@rnn_backward.register_fake
def _rnn_backward_fake(d_output, d_h_all, h0, h_all, hin, w_hh, lengths, relu):
    return h_all.new_empty(hin.shape), torch.empty_like(h0), torch.empty_like(w_hh)


def _setup_context(ctx, inputs, output):
    _, h0, w_hh, lengths, relu = inputs
    _, h_all, hin = output
    ctx.mark_non_differentiable(hin)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(h0, h_all, hin, w_hh, lengths)
    ctx.relu = relu


def _backward(ctx, d_output, d_h_all, _):
    if torch.is_grad_enabled():
        raise RuntimeError(DOUBLE_BACKWARD.replace("LSTM", "RNN"))
    d_xa, dh0, dw_hh = rnn_backward(d_output, d_h_all, *ctx.saved_tensors, ctx.relu)
    return d_xa, dh0, dw_hh, None, None


rnn_forward.register_autograd(_backward, setup_context=_setup_context)
