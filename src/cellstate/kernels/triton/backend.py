"""The Triton backend's API: ``lstm_layer`` and ``rnn_layer`` with the signatures of
``cellstate.kernels.reference``, and ``unsupported``.

Shapes: T time, B batch, D input, H hidden, P output (proj_size or H), G gate rows (4H or 3H).
"""

from __future__ import annotations

from dataclasses import fields

import torch
import torch.nn.functional as F
from torch import Tensor

from cellstate.kernels.params import LSTMLayerParams, RNNLayerParams, StepNoise
from cellstate.kernels.reference import LAYER_NORM_EPS, reverse_index, time_gather
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
        xa = F.layer_norm(xa, xa.shape[-1:], ln_ih.to(compute), None, LAYER_NORM_EPS)
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
    T, B, _ = x.shape
    index = reverse_index(lengths, T, B, x.device) if reverse else None
    if index is not None:
        x = time_gather(x, index)
    if lengths is not None:
        lengths = lengths.to(device=x.device, dtype=torch.int64)
    return x, lengths, index


def _contiguous(obj) -> dict[str, object]:
    """A params or noise dataclass as a dict, its tensors contiguous (the kernels index rows)."""
    values = {f.name: getattr(obj, f.name) for f in fields(obj)}
    return {k: v.contiguous() if isinstance(v, Tensor) else v for k, v in values.items()}


def lstm_layer(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    p: LSTMLayerParams,
    noise: StepNoise | None = None,
    lengths: Tensor | None = None,
    reverse: bool = False,
    return_states: bool = False,
) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor] | None]:
    """One LSTM layer over a sequence: ``cellstate.kernels.reference.lstm_layer`` in Triton."""
    x, lengths, index = _prepare(x, lengths, reverse)
    T, B, _ = x.shape
    xa = _input_side(x, p, _compute_dtype(x))
    o = lstm_forward(
        xa=xa, h0=h0, c0=c0, lengths=lengths, **_contiguous(p), **_contiguous(noise or StepNoise())
    )
    output = o["output"]
    h_n, c_n = o["h_all"][-1].to(x.dtype), o["c_all"][-1].to(x.dtype)
    states = None
    if return_states:
        H = c0.shape[-1]
        running = None if lengths is None else (torch.arange(T, device=x.device)[:, None] < lengths)
        running = None if running is None else running.unsqueeze(-1)  # (T, B, 1)

        def record(v: Tensor) -> Tensor:
            v = v.to(x.dtype)
            return v if running is None else torch.where(running, v, 0)

        gates = o["gates"].unflatten(-1, (-1, H)).unbind(2)  # each (T, B, H)
        if p.forget_gate:
            f = record(gates[1])
        else:  # the constant 1 of the 1997 cell, as in the reference (no gradient)
            f = x.new_ones(T, B, H) if running is None else running.expand(T, B, H).to(x.dtype)
        states = {
            "h": output,
            "c": record(o["c_all"][1:]),
            "i": record(gates[0]),
            "f": f,
            "g": record(gates[-2]),
            "o": record(gates[-1]),
        }
    if index is not None:
        output = time_gather(output, index)
        if states is not None:
            states = {k: time_gather(v, index) for k, v in states.items()}
    return output, h_n, c_n, states


def rnn_layer(
    x: Tensor,
    h0: Tensor,
    p: RNNLayerParams,
    lengths: Tensor | None = None,
    reverse: bool = False,
    return_states: bool = False,
) -> tuple[Tensor, Tensor, dict[str, Tensor] | None]:
    """One plain-RNN layer over a sequence: ``cellstate.kernels.reference.rnn_layer`` in Triton."""
    if p.nonlinearity not in ("tanh", "relu"):
        raise NotImplementedError(f"nonlinearity must be 'tanh' or 'relu'; got {p.nonlinearity!r}")
    x, lengths, index = _prepare(x, lengths, reverse)
    xa = _input_side(x, p, _compute_dtype(x))
    output, h_all, _ = rnn_forward(xa, h0, p.w_hh.contiguous(), lengths, p.nonlinearity == "relu")
    if index is not None:
        output = time_gather(output, index)
    return output, h_all[-1].to(x.dtype), ({"h": output} if return_states else None)
