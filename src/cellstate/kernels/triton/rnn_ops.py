"""The Triton plain RNN as torch.library custom ops ``cellstate::triton_rnn_forward`` and
``cellstate::triton_rnn_backward``: per step one GEMM and one Triton kernel each way; dW_hh as
one GEMM after the loop. xa = x W_ih^T + b_ih + b_hh (T, B, H) is formed before the op with
torch ops (autograd gives dW_ih, dx and the biases from d xa). The ops' arguments, results and
saved tensors follow from ``RNN`` (``kernels/description.py``), as the LSTM's from
``layout.LSTM``."""

from __future__ import annotations

import torch
from torch import Tensor

from cellstate.kernels.description import (
    LENGTHS_ARG,
    Arg,
    OpDescription,
    Out,
    SequenceDims,
    tensor_args,
)
from cellstate.kernels.params import RNNLayerParams
from cellstate.kernels.triton import launch
from cellstate.kernels.triton.layout import INPUT_SIDE
from cellstate.kernels.triton.lstm_ops import DOUBLE_BACKWARD

RNN = OpDescription(
    inputs=(
        Arg("xa", "Tensor", grad=True, saved=False),  # (T, B, H) compute
        Arg("h0", "Tensor", grad=True),  # (B, H)
        *tensor_args(RNNLayerParams, leave_out=INPUT_SIDE),  # w_hh
        LENGTHS_ARG,  # (B,) int64 on the device
        Arg("relu", "bool"),  # the nonlinearity: relu, else tanh
    ),
    outputs=(
        Out("output", lambda d: (d.T, d.B, d.H), low=True, grad=True, saved=False),
        Out("h_all", lambda d: (d.T + 1, d.B, d.H), grad=True),  # h0, then each step's state
        Out("hin", lambda d: (d.T, d.B, d.H), low=True),  # the GEMM inputs
    ),
)


def _allocate(a: dict) -> tuple[Tensor, ...]:
    """Every forward output, uninitialised, from the named forward arguments."""
    xa, w_hh = a["xa"], a["w_hh"]
    dims = SequenceDims(*xa.shape)
    return tuple(
        xa.new_empty(shape, dtype=w_hh.dtype if out.low else xa.dtype)
        for out, shape in zip(RNN.outputs, RNN.shapes(dims), strict=True)
    )


def _forward(*args):
    a = dict(zip(RNN.input_names, args, strict=True))
    xa, h0, w_hh, lengths, relu = (a[n] for n in ("xa", "h0", "w_hh", "lengths", "relu"))
    output, h_all, hin = _allocate(a)
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


def _backward(*args):
    """BPTT: the gradients of xa (T, B, H), h0 and w_hh."""
    s = dict(zip(RNN.backward_names, args, strict=True))
    d_xa, dh0, dw_hh = _grads_fake(*args)
    h_all, hin, w_hh, lengths, relu = (s[n] for n in ("h_all", "hin", "w_hh", "lengths", "relu"))
    k = launch.kernels("rnn_kernels")
    T, B, H = hin.shape
    block_b, block_h, grid = launch.blocks(B, H, slots=1)
    d_output = launch.contiguous_or_none(s["d_output"])
    d_h_all = launch.contiguous_or_none(s["d_h_all"])
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


def _grads_fake(*args):
    s = dict(zip(RNN.backward_names, args, strict=True))
    return (
        s["h_all"].new_empty(s["hin"].shape),
        torch.empty_like(s["h0"]),
        torch.empty_like(s["w_hh"]),
    )


rnn_forward = torch.library.custom_op(
    "cellstate::triton_rnn_forward", _forward, mutates_args=(), schema=RNN.forward_schema()
)
rnn_backward = torch.library.custom_op(
    "cellstate::triton_rnn_backward", _backward, mutates_args=(), schema=RNN.backward_schema()
)
rnn_forward.register_fake(lambda *args: _allocate(dict(zip(RNN.input_names, args, strict=True))))
rnn_backward.register_fake(_grads_fake)


def _setup_context(ctx, inputs, output):
    RNN.save_for_backward(ctx, inputs, output)


def _autograd_backward(ctx, *grads):
    if torch.is_grad_enabled():
        raise RuntimeError(DOUBLE_BACKWARD.replace("LSTM", "RNN"))
    d_outputs = [d for d, out in zip(grads, RNN.outputs, strict=True) if out.grad]
    grads = rnn_backward(*d_outputs, *ctx.saved_tensors, *ctx.flags)
    result = dict(zip(RNN.grad_inputs, grads, strict=True))
    return tuple(result.get(a.name) for a in RNN.inputs)


rnn_forward.register_autograd(_autograd_backward, setup_context=_setup_context)
