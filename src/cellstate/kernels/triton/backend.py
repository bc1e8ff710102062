"""The Triton backend's API: ``lstm_layer`` and ``rnn_layer``, the reference's layer functions
with a fused scan (``cellstate.kernels.reference``: the same cells, one kernel launch running
every step), and ``unsupported``.

Shapes: T time, B batch, D input, H hidden, P output (proj_size or H), G gate rows (4H or 3H).
"""

from __future__ import annotations

from dataclasses import fields
from functools import partial

import torch
from torch import Tensor

from cellstate.kernels import reference
from cellstate.kernels.params import LSTMLayerParams, RNNLayerParams, StepNoise
from cellstate.kernels.records import LSTM_STATE_NAMES
from cellstate.kernels.reference import LSTMCell, RNNCell, layer_norm, zero_past_lengths
from cellstate.kernels.triton.lstm_ops import lstm_forward
from cellstate.kernels.triton.rnn_ops import rnn_forward
from cellstate.kernels.triton.runtime import unsupported

__all__ = ["lstm_layer", "rnn_layer", "unsupported"]


def _input_side(x: Tensor, p: LSTMLayerParams | RNNLayerParams, compute: torch.dtype) -> Tensor:
    """xa = LN_ih(x W_ih^T) + b_ih + b_hh (T, B, G) in the compute dtype: every step's input
    projection in one GEMM (the layer norm only for the LSTM's layer_norm variant)."""
    xa = (x @ p.w_ih.t()).to(compute)  # (T, B, G)
    ln_ih = getattr(p, "ln_ih", None)
    if ln_ih is not None:
        xa = layer_norm(xa, ln_ih.to(compute))
    for bias in (p.b_ih, p.b_hh):
        if bias is not None:
            xa = xa + bias.to(compute)
    return xa.contiguous()


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _prepare(x: Tensor, lengths: Tensor | None, reverse: bool):
    reason = unsupported(x)
    if reason:
        raise NotImplementedError(reason)
    x, index = reference.to_step_order(x, lengths, reverse)
    if lengths is not None:
        lengths = lengths.to(device=x.device, dtype=torch.int64)
    return x, lengths, index


def _contiguous(obj) -> dict[str, object]:
    """A params or noise dataclass as a dict, its tensors contiguous (the kernels index rows)."""
    values = {f.name: getattr(obj, f.name) for f in fields(obj)}
    return {k: v.contiguous() if isinstance(v, Tensor) else v for k, v in values.items()}


def _lstm_scan(cell: LSTMCell, x, carry, noise, lengths, reverse, return_states):
    """``reference.scan`` of an LSTMCell in one kernel launch."""
    x, lengths, index = _prepare(x, lengths, reverse)
    T, B, _ = x.shape
    p, (h0, c0) = cell.p, carry
    xa = _input_side(x, p, _compute_dtype(x))
    o = lstm_forward(
        xa=xa, h0=h0, c0=c0, lengths=lengths, **_contiguous(p), **_contiguous(noise or StepNoise())
    )
    carry = (o["h_all"][-1].to(x.dtype), o["c_all"][-1].to(x.dtype))
    records = None
    if return_states:
        H = c0.shape[-1]
        gates = o["gates"].unflatten(-1, (-1, H)).unbind(2)  # each (T, B, H)
        # without a forget gate f is the constant 1 of the 1997 cell, as in the reference
        f = gates[1] if p.forget_gate else x.new_ones(T, B, H)
        values = (o["c_all"][1:], gates[0], f, gates[-2], gates[-1])  # c, i, f, g, o
        running = reference.running_mask(lengths, T, x.device)  # (T, B, 1) or None
        records = {
            name: zero_past_lengths(v.to(x.dtype), running)
            for name, v in zip(LSTM_STATE_NAMES[1:], values, strict=True)
        }
    return reference.scan_result(index, o["output"], carry, records)


def _rnn_scan(cell: RNNCell, x, carry, noise, lengths, reverse, return_states):
    """``reference.scan`` of an RNNCell in one kernel launch (the RNN takes no noise)."""
    x, lengths, index = _prepare(x, lengths, reverse)
    p = cell.p
    xa = _input_side(x, p, _compute_dtype(x))
    output, h_all, _ = rnn_forward(
        xa, carry[0], p.w_hh.contiguous(), lengths, p.nonlinearity == "relu"
    )
    return reference.scan_result(
        index, output, (h_all[-1].to(x.dtype),), {} if return_states else None
    )


# The reference's layer functions (signatures, docstrings, cells) with the fused scans.
lstm_layer = partial(reference.lstm_layer, scan=_lstm_scan)
rnn_layer = partial(reference.rnn_layer, scan=_rnn_scan)
