"""The reference backend: the equations, step by step, in plain PyTorch (any device, any dtype).

This is the spec every other backend is tested against. One function per cell, one layer in one
direction over a whole (padded) sequence. Shapes legend: T time, B batch, D input, H hidden,
P output (proj_size or H), G gate rows (4H; 3H without a forget gate).

LSTM step (gate order i, f, g, o; the optional terms are the variants):
    a_t = LN_ih(W_ih x_t) + b_ih + LN_hh(W_hh (m * h_{t-1})) + b_hh     m: recurrent dropout
    i_t = sigmoid(a_i + w_ci * c_{t-1})                                  peephole
    f_t = sigmoid(a_f + w_cf * c_{t-1})          (f_t = 1 without a forget gate)
    g_t = tanh(a_g)
    c_t = f_t * c_{t-1} + i_t * g_t
    o_t = sigmoid(a_o + w_co * c_t)
    h_t = W_hr (o_t * tanh(LN_c(c_t)))                                   projection
    zoneout: c_t <- z_c * c_{t-1} + (1 - z_c) * c_t,  h_t <- z_h * h_{t-1} + (1 - z_h) * h_t
RNN step:
    h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),  act = tanh or relu

Variable lengths: a sequence b stops at lengths[b]; past it its state is held, and its output
and recorded states are zero. reverse=True runs each sequence from its own last element back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cellstate.kernels.params import LSTMLayerParams, RNNLayerParams, StepNoise

LAYER_NORM_EPS = 1e-5
LSTM_STATE_NAMES = ("h", "c", "i", "f", "g", "o")


def reverse_index(lengths: Tensor | None, T: int, B: int, device) -> Tensor:
    """(T, B) time index that reverses each sequence within its own length (an involution)."""
    t = torch.arange(T, device=device).unsqueeze(1).expand(T, B)  # (T, B)
    if lengths is None:
        return t.flip(0)
    L = lengths.to(device).unsqueeze(0)  # (1, B)
    return torch.where(t < L, L - 1 - t, t)


def time_gather(x: Tensor, index: Tensor) -> Tensor:
    """x (T, B, *) gathered along time by index (T, B)."""
    return x.gather(0, index.view(*index.shape, 1).expand_as(x))


def _valid_masks(lengths: Tensor | None, T: int, device) -> list[Tensor | None]:
    """Per step, a (B, 1) bool mask of the sequences still running (None: all are)."""
    if lengths is None:
        return [None] * T
    L = lengths.to(device)
    return [(t < L).unsqueeze(1) for t in range(T)]


def _zoneout(z: Tensor | None, t: int, previous: Tensor, new: Tensor) -> Tensor:
    if z is None:
        return new
    zt = z[t] if z.dim() == 3 else z
    return zt * previous + (1 - zt) * new


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
    """One LSTM layer over a sequence.

    x (T, B, D), h0 (B, P), c0 (B, H), lengths (B,) or None.
    Returns output (T, B, P), h_n (B, P), c_n (B, H) and, with return_states, a dict of
    (T, B, P) "h" and (T, B, H) "c", "i", "f", "g", "o".
    """
    noise = noise or StepNoise()
    T, B, _ = x.shape
    if reverse:
        index = reverse_index(lengths, T, B, x.device)
        x = time_gather(x, index)

    xw = x @ p.w_ih.t()  # (T, B, G): every input projection in one GEMM
    if p.ln_ih is not None:
        xw = F.layer_norm(xw, xw.shape[-1:], p.ln_ih, None, LAYER_NORM_EPS)
    if p.b_ih is not None:
        xw = xw + p.b_ih

    # unbind, not xw[t]: the backward of indexing would write a whole (T, B, G) gradient per
    # step (quadratic in T); unbind's backward stacks the T step gradients once.
    xw_steps = xw.unbind(0)
    h, c = h0, c0
    outputs: list[Tensor] = []
    record: dict[str, list[Tensor]] = {k: [] for k in LSTM_STATE_NAMES} if return_states else {}
    valid = _valid_masks(lengths, T, x.device)
    for t in range(T):
        h_in = h if noise.recurrent_mask is None else h * noise.recurrent_mask
        hw = h_in @ p.w_hh.t()  # (B, G)
        if p.ln_hh is not None:
            hw = F.layer_norm(hw, hw.shape[-1:], p.ln_hh, None, LAYER_NORM_EPS)
        if p.b_hh is not None:
            hw = hw + p.b_hh
        a = xw_steps[t] + hw  # (B, G)
        if p.forget_gate:
            a_i, a_f, a_g, a_o = a.chunk(4, 1)  # each (B, H)
        else:
            a_i, a_g, a_o = a.chunk(3, 1)
        if p.w_ci is not None:
            a_i = a_i + p.w_ci * c
            if p.forget_gate:
                a_f = a_f + p.w_cf * c
        i = torch.sigmoid(a_i)
        g = torch.tanh(a_g)
        if p.forget_gate:
            f = torch.sigmoid(a_f)
            c_new = f * c + i * g
        else:
            f = torch.ones_like(i)
            c_new = c + i * g  # the constant error carousel of 1997
        if p.w_co is not None:
            a_o = a_o + p.w_co * c_new
        o = torch.sigmoid(a_o)
        c_shown = c_new
        if p.ln_c_weight is not None:
            c_shown = F.layer_norm(
                c_new, c_new.shape[-1:], p.ln_c_weight, p.ln_c_bias, LAYER_NORM_EPS
            )
        h_new = o * torch.tanh(c_shown)
        if p.w_hr is not None:
            h_new = h_new @ p.w_hr.t()  # (B, P)
        c_new = _zoneout(noise.zoneout_c, t, c, c_new)
        h_new = _zoneout(noise.zoneout_h, t, h, h_new)

        m = valid[t]
        if m is None:
            h, c, out = h_new, c_new, h_new
        else:
            h = torch.where(m, h_new, h)
            c = torch.where(m, c_new, c)
            out = torch.where(m, h_new, torch.zeros_like(h_new))
        outputs.append(out)
        if return_states:
            for name, value in zip(LSTM_STATE_NAMES, (h_new, c_new, i, f, g, o), strict=True):
                record[name].append(value if m is None else torch.where(m, value, 0))

    output = torch.stack(outputs)  # (T, B, P)
    states = {k: torch.stack(v) for k, v in record.items()} if return_states else None
    if reverse:
        output = time_gather(output, index)
        if states is not None:
            states = {k: time_gather(v, index) for k, v in states.items()}
    return output, h, c, states


def rnn_layer(
    x: Tensor,
    h0: Tensor,
    p: RNNLayerParams,
    lengths: Tensor | None = None,
    reverse: bool = False,
    return_states: bool = False,
) -> tuple[Tensor, Tensor, dict[str, Tensor] | None]:
    """One plain-RNN layer over a sequence.

    x (T, B, D), h0 (B, H). Returns output (T, B, H), h_n (B, H) and, with return_states,
    {"h": (T, B, H)} (equal to the output: the RNN has no other state).
    """
    T, B, _ = x.shape
    if reverse:
        index = reverse_index(lengths, T, B, x.device)
        x = time_gather(x, index)
    act = torch.tanh if p.nonlinearity == "tanh" else torch.relu

    xw = x @ p.w_ih.t()  # (T, B, H)
    if p.b_ih is not None:
        xw = xw + p.b_ih
    xw_steps = xw.unbind(0)  # see lstm_layer: indexing would be quadratic in T in backward
    h = h0
    outputs: list[Tensor] = []
    valid = _valid_masks(lengths, T, x.device)
    for t in range(T):
        a = xw_steps[t] + h @ p.w_hh.t()
        if p.b_hh is not None:
            a = a + p.b_hh
        h_new = act(a)
        m = valid[t]
        if m is None:
            h, out = h_new, h_new
        else:
            h = torch.where(m, h_new, h)
            out = torch.where(m, h_new, torch.zeros_like(h_new))
        outputs.append(out)

    output = torch.stack(outputs)  # (T, B, H)
    if reverse:
        output = time_gather(output, index)
    return output, h, ({"h": output} if return_states else None)
