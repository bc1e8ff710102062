"""The reference backend: the equations, step by step, in plain PyTorch (any device, any dtype).

This is the spec every other backend is tested against. A cell is one step's equations; one
scan runs any cell over a whole (padded) sequence, in one direction, and handles what is not
the equations: reverse direction, variable lengths, zoneout, recurrent dropout and the per-step
records (as Flax splits ``LSTMCell`` from ``RNN``). A layer function is a cell run by the scan.
Shapes legend: T time, B batch, D input, H hidden, P output (proj_size or H), G gate rows
(4H; 3H without a forget gate).

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

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from cellstate.kernels.params import LSTMLayerParams, RNNLayerParams, StepNoise
from cellstate.kernels.records import LSTM_STATE_NAMES, RNN_STATE_NAMES

LAYER_NORM_EPS = 1e-5

# scan(cell, x, carry, noise, lengths, reverse, return_states) -> (output, carry, states | None)
Scan = Callable[..., tuple[Tensor, tuple[Tensor, ...], dict[str, Tensor] | None]]


def layer_norm(v: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """LN over the last dimension with gain ``weight`` (and ``bias``)."""
    return F.layer_norm(v, v.shape[-1:], weight, bias, LAYER_NORM_EPS)


# ---- the cells: one step's equations ------------------------------------------------------


@dataclass(frozen=True)
class LSTMCell:
    """The LSTM equations of one layer-direction. Carries (h, c); records h, c, i, f, g, o."""

    p: LSTMLayerParams
    names = LSTM_STATE_NAMES

    def input(self, x: Tensor) -> Tensor:
        """LN_ih(W_ih x_t) + b_ih of every step at once: x (T, B, D) -> (T, B, G)."""
        p = self.p
        xw = x @ p.w_ih.t()  # (T, B, G): every input projection in one GEMM
        if p.ln_ih is not None:
            xw = layer_norm(xw, p.ln_ih)
        if p.b_ih is not None:
            xw = xw + p.b_ih
        return xw

    def step(self, xw: Tensor, h_prev: Tensor, c_prev: Tensor) -> tuple[Tensor, ...]:
        """xw (B, G) this step's input side, h_prev (B, P), c_prev (B, H).
        Returns h (B, P), c (B, H), i, f, g, o (B, H)."""
        p = self.p
        hw = h_prev @ p.w_hh.t()  # (B, G)
        if p.ln_hh is not None:
            hw = layer_norm(hw, p.ln_hh)
        if p.b_hh is not None:
            hw = hw + p.b_hh
        a = xw + hw  # (B, G)
        if p.forget_gate:
            a_i, a_f, a_g, a_o = a.chunk(4, 1)  # each (B, H)
        else:
            a_i, a_g, a_o = a.chunk(3, 1)
        if p.w_ci is not None:
            a_i = a_i + p.w_ci * c_prev
            if p.forget_gate:
                a_f = a_f + p.w_cf * c_prev
        i = torch.sigmoid(a_i)
        g = torch.tanh(a_g)
        if p.forget_gate:
            f = torch.sigmoid(a_f)
            c = f * c_prev + i * g
        else:
            f = torch.ones_like(i)
            c = c_prev + i * g  # the constant error carousel of 1997
        if p.w_co is not None:
            a_o = a_o + p.w_co * c
        o = torch.sigmoid(a_o)
        c_shown = c if p.ln_c_weight is None else layer_norm(c, p.ln_c_weight, p.ln_c_bias)
        h = o * torch.tanh(c_shown)
        if p.w_hr is not None:
            h = h @ p.w_hr.t()  # (B, P)
        return h, c, i, f, g, o


@dataclass(frozen=True)
class RNNCell:
    """The plain-RNN equation of one layer-direction. Carries (h,); records h."""

    p: RNNLayerParams
    names = RNN_STATE_NAMES

    def __post_init__(self):
        if self.p.nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu'; got {self.p.nonlinearity!r}")

    def input(self, x: Tensor) -> Tensor:
        """W_ih x_t + b_ih of every step at once: x (T, B, D) -> (T, B, H)."""
        xw = x @ self.p.w_ih.t()  # (T, B, H)
        return xw if self.p.b_ih is None else xw + self.p.b_ih

    def step(self, xw: Tensor, h_prev: Tensor) -> tuple[Tensor]:
        """xw (B, H) this step's input side, h_prev (B, H). Returns (h,), h (B, H)."""
        p = self.p
        a = xw + h_prev @ p.w_hh.t()  # (B, H)
        if p.b_hh is not None:
            a = a + p.b_hh
        return (torch.tanh(a) if p.nonlinearity == "tanh" else torch.relu(a),)


# ---- the scan: one cell over a sequence ---------------------------------------------------


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


def to_step_order(x: Tensor, lengths: Tensor | None, reverse: bool) -> tuple[Tensor, Tensor | None]:
    """x (T, B, *) in the order the steps run, and the index that undoes it (None: forward)."""
    if not reverse:
        return x, None
    index = reverse_index(lengths, x.shape[0], x.shape[1], x.device)
    return time_gather(x, index), index


def scan_result(
    index: Tensor | None,
    output: Tensor,
    carry: tuple[Tensor, ...],
    records: dict[str, Tensor] | None,
) -> tuple[Tensor, tuple[Tensor, ...], dict[str, Tensor] | None]:
    """What a scan returns: output (T, B, *) and records back in input order (index: from
    to_step_order), the carry, and the records (None: not asked for) after "h", the output."""
    if index is not None:
        output = time_gather(output, index)
        if records is not None:
            records = {k: time_gather(v, index) for k, v in records.items()}
    return output, carry, (None if records is None else {"h": output, **records})


def running_mask(lengths: Tensor | None, T: int, device) -> Tensor | None:
    """(T, B, 1) bool: which sequences are still running at each step (None: all, always)."""
    if lengths is None:
        return None
    return (torch.arange(T, device=device).unsqueeze(1) < lengths.to(device)).unsqueeze(-1)


def zero_past_lengths(v: Tensor, running: Tensor | None) -> Tensor:
    """v (T, B, *) with the steps past each sequence's length zeroed (running: running_mask)."""
    return v if running is None else torch.where(running, v, 0)


def _zoneout(z: Tensor | None, t: int, previous: Tensor, new: Tensor) -> Tensor:
    """z: a (T, B, *) 0/1 mask (training) or the 0-dim probability (evaluation); None: off."""
    if z is None:
        return new
    zt = z[t] if z.dim() == 3 else z
    return zt * previous + (1 - zt) * new


def scan(
    cell: LSTMCell | RNNCell,
    x: Tensor,
    carry: tuple[Tensor, ...],
    noise: StepNoise | None = None,
    lengths: Tensor | None = None,
    reverse: bool = False,
    return_states: bool = False,
) -> tuple[Tensor, tuple[Tensor, ...], dict[str, Tensor] | None]:
    """Run ``cell`` over x (T, B, D) from ``carry`` = (h_0 (B, P), then c_0 (B, H) for the LSTM).

    Around each step of the cell: recurrent dropout multiplies h_{t-1} by noise.recurrent_mask
    (B, P); zoneout mixes each new carried state with its previous value (noise.zoneout_h for h,
    noise.zoneout_c for c); a sequence past its length (lengths (B,)) keeps its state and
    outputs zeros. reverse=True runs each sequence from its own last element back; the outputs
    and records come back in input order.

    Returns output (T, B, P) (every h_t), the final carry and, with return_states, a dict of
    every step's values by ``cell.names`` ("h" is the output), each (T, B, *), zero past a
    sequence's length.
    """
    noise = noise or StepNoise()
    zoneout = (noise.zoneout_h, noise.zoneout_c)[: len(carry)]
    T = x.shape[0]
    x, index = to_step_order(x, lengths, reverse)
    running = running_mask(lengths, T, x.device)  # (T, B, 1) or None
    running_steps = [None] * T if running is None else running.unbind(0)  # each (B, 1)
    # unbind, not xw[t]: the backward of indexing would write a whole (T, B, G) gradient per
    # step (quadratic in T); unbind's backward stacks the T step gradients once.
    xw_steps = cell.input(x).unbind(0)
    outputs: list[Tensor] = []
    records_by_step: list[tuple[Tensor, ...]] = []
    n, mask = len(carry), noise.recurrent_mask
    zoned = any(z is not None for z in zoneout)
    for t in range(T):
        h_prev = carry[0] if mask is None else carry[0] * mask
        values = cell.step(xw_steps[t], h_prev, *carry[1:])  # the new carry, then the gates
        new = values[:n]
        if zoned:
            new = tuple(
                _zoneout(z, t, old, v) for z, old, v in zip(zoneout, carry, new, strict=True)
            )
        m = running_steps[t]
        if m is None:
            carry = new
            outputs.append(new[0])
        else:
            carry = tuple(torch.where(m, v, old) for v, old in zip(new, carry, strict=True))
            outputs.append(torch.where(m, new[0], 0))
        if return_states:
            records_by_step.append(new[1:] + values[n:])  # c, then the gates

    output = torch.stack(outputs)  # (T, B, P)
    records_by_name = None
    if return_states:
        steps_by_name = zip(*records_by_step, strict=True)  # per name, its T values
        records_by_name = {
            name: zero_past_lengths(torch.stack(steps), running)
            for name, steps in zip(cell.names[1:], steps_by_name, strict=True)
        }
    return scan_result(index, output, carry, records_by_name)


# ---- the layer functions: a cell run by a scan (the backend API) --------------------------


def lstm_layer(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    p: LSTMLayerParams,
    noise: StepNoise | None = None,
    lengths: Tensor | None = None,
    reverse: bool = False,
    return_states: bool = False,
    *,
    scan: Scan = scan,
) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor] | None]:
    """One LSTM layer over a sequence: LSTMCell(p) run by ``scan`` (a fused backend's own scan
    replaces the default one, which runs the steps here in PyTorch).

    x (T, B, D), h0 (B, P), c0 (B, H), lengths (B,) or None.
    Returns output (T, B, P), h_n (B, P), c_n (B, H) and, with return_states, a dict of
    (T, B, P) "h" and (T, B, H) "c", "i", "f", "g", "o".
    """
    output, (h, c), states = scan(LSTMCell(p), x, (h0, c0), noise, lengths, reverse, return_states)
    return output, h, c, states


def rnn_layer(
    x: Tensor,
    h0: Tensor,
    p: RNNLayerParams,
    lengths: Tensor | None = None,
    reverse: bool = False,
    return_states: bool = False,
    *,
    scan: Scan = scan,
) -> tuple[Tensor, Tensor, dict[str, Tensor] | None]:
    """One plain-RNN layer over a sequence: RNNCell(p) run by ``scan`` (as in lstm_layer).

    x (T, B, D), h0 (B, H). Returns output (T, B, H), h_n (B, H) and, with return_states,
    {"h": (T, B, H)} (the output: the RNN has no other state).
    """
    output, (h,), states = scan(RNNCell(p), x, (h0,), None, lengths, reverse, return_states)
    return output, h, states
