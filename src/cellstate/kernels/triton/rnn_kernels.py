"""Triton kernels of one plain-RNN step (tanh or relu): forward and BPTT, one launch each.

Same layout as ``lstm_kernels``: each program owns BLOCK_B whole rows; state math in the dtype
of the state buffer h_all.
"""

import triton
import triton.language as tl

from cellstate.kernels.triton.activations import tanh
from cellstate.kernels.triton.lstm_kernels import h_grad, running, tile


@triton.jit(do_not_specialize=["t"])
def rnn_forward_step(
    t, B, H, xa, hw, h_all, hin, out, lengths,
    RELU: tl.constexpr, LENGTHS: tl.constexpr, WRITE_HIN: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """Step t: h = act(xa[t] + hw) with hw = W_hh h (B, H); writes h_all[t+1] (held on
    finished rows), out[t] (zero there) and hin[t+1], the next step's GEMM input."""
    step = t.to(tl.int64)
    rows, cols, mask = tile(B, H, BLOCK_B, BLOCK_H)
    run = running(lengths, rows, B, step, LENGTHS)
    row_h = rows[:, None] * H + cols[None, :]
    step_h = step * B * H
    h = tl.load(h_all + step_h + row_h, mask=mask, other=0.0)
    a = tl.load(xa + step_h + row_h, mask=mask, other=0.0).to(h.dtype)
    a += tl.load(hw + row_h, mask=mask, other=0.0).to(h.dtype)
    if RELU:
        h_new = tl.maximum(a, 0.0)
    else:
        h_new = tanh(a)
    kept = tl.where(run, h_new, h)
    tl.store(h_all + step_h + B * H + row_h, kept, mask=mask)
    tl.store(out + step_h + row_h, tl.where(run, h_new, 0.0).to(out.dtype.element_ty), mask=mask)
    if WRITE_HIN:
        tl.store(hin + step_h + B * H + row_h, kept.to(hin.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["t"])
def rnn_backward_step(
    t, B, H, d_output, d_h_all, dh_carry, dh_gemm, h_all, da, da_low, lengths,
    RELU: tl.constexpr, LENGTHS: tl.constexpr, HAS_GEMM: tl.constexpr,
    HAS_DOUT: tl.constexpr, HAS_DH_ALL: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """BPTT through step t: da[t] (T, B, H), the gradient of the pre-activation (also as
    da_low[t] in the GEMM dtype), and dh_carry updated (see ``lstm_kernels.h_grad``)."""
    step = t.to(tl.int64)
    rows, cols, mask = tile(B, H, BLOCK_B, BLOCK_H)
    run = running(lengths, rows, B, step, LENGTHS)
    d_h = h_grad(
        step, rows, cols, mask, run, B, H, d_output, d_h_all, dh_carry, dh_gemm, dh_carry,
        dh_carry, 0, 0, 0, dh_carry, HAS_GEMM, HAS_DOUT, HAS_DH_ALL, False, False, False,
    )  # fmt: skip
    offs = step * B * H + rows[:, None] * H + cols[None, :]
    h_new = tl.load(h_all + B * H + offs, mask=mask, other=0.0)  # = act(a) on running rows
    if RELU:
        d_a = tl.where(h_new > 0.0, d_h, 0.0)
    else:
        d_a = d_h * (1.0 - h_new * h_new)
    tl.store(da + offs, d_a, mask=mask)
    tl.store(da_low + offs, d_a.to(da_low.dtype.element_ty), mask=mask)
