"""What a kernel receives for one layer in one direction.

The tensor fields, in this order, are the kernels' argument lists (``kernels/description.py``):
a new variant is a new field here and its math in the kernels.

Shapes legend: T time, B batch, D input, H hidden, P output (proj_size or H),
G gate rows (4H, or 3H for the cell without a forget gate: rows i, g, o).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class LSTMLayerParams:
    """Parameters and options of one LSTM layer-direction, as the kernels see them."""

    w_ih: Tensor  # (G, D)
    w_hh: Tensor  # (G, P)
    b_ih: Tensor | None = None  # (G,)
    b_hh: Tensor | None = None  # (G,)
    w_hr: Tensor | None = None  # (P, H) projection
    w_ci: Tensor | None = None  # (H,) peephole c_{t-1} -> i
    w_cf: Tensor | None = None  # (H,) peephole c_{t-1} -> f
    w_co: Tensor | None = None  # (H,) peephole c_t -> o
    ln_ih: Tensor | None = None  # (G,) layer-norm gain of W_ih x
    ln_hh: Tensor | None = None  # (G,) layer-norm gain of W_hh h
    ln_c_weight: Tensor | None = None  # (H,) layer-norm gain of c_t
    ln_c_bias: Tensor | None = None  # (H,) layer-norm bias of c_t
    forget_gate: bool = True


@dataclass(frozen=True)
class RNNLayerParams:
    """Parameters of one plain-RNN layer-direction."""

    w_ih: Tensor  # (H, D)
    w_hh: Tensor  # (H, H)
    b_ih: Tensor | None = None  # (H,)
    b_hh: Tensor | None = None  # (H,)
    nonlinearity: str = "tanh"


@dataclass(frozen=True)
class StepNoise:
    """Zoneout and recurrent-dropout inputs of one layer-direction (None = off).

    zoneout_h / zoneout_c: the probability of keeping the previous value. In training a 0/1 mask
    (T, B, P) / (T, B, H) drawn by the layer; in evaluation a 0-dim tensor holding the
    probability itself (the expectation, as Krueger et al. 2016 do at test time).
    recurrent_mask: (B, P), already scaled by 1/(1-p), multiplies h_{t-1} before W_hh.
    """

    zoneout_h: Tensor | None = None
    zoneout_c: Tensor | None = None
    recurrent_mask: Tensor | None = None
