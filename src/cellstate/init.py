"""LSTM initialisers, usable on cellstate.LSTM and torch.nn.LSTM parameters alike.

Gate blocks are laid out i, f, g, o along the first dimension (each H rows).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


@torch.no_grad()
def forget_bias_(bias: Tensor, hidden_size: int, value: float) -> Tensor:
    """Add ``value`` to the forget-gate block of a (4H,) bias (Gers et al. 2000;
    Jozefowicz et al. 2015 recommend 1): the cell starts by remembering."""
    bias[hidden_size : 2 * hidden_size] += value
    return bias


@torch.no_grad()
def chrono_(
    bias_ih: Tensor,
    bias_hh: Tensor,
    hidden_size: int,
    t_max: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Chrono initialisation (Tallec & Ollivier 2018): b_f ~ log U(1, t_max - 1), b_i = -b_f.

    The forget gate then keeps information for a characteristic time between 1 and t_max steps.
    The offsets go into ``bias_ih``; the i and f blocks of ``bias_hh`` are zeroed so that the
    total bias is exactly the chrono value.
    """
    if not t_max > 2:
        raise ValueError(f"t_max must be greater than 2 for chrono initialisation, got {t_max}")
    H = hidden_size
    u = torch.empty(H, dtype=torch.float64).uniform_(1.0, t_max - 1.0, generator=generator)
    b_f = torch.log(u).to(bias_ih)
    bias_ih[H : 2 * H] = b_f
    bias_ih[:H] = -b_f
    bias_hh[: 2 * H] = 0.0
    return bias_ih, bias_hh


@torch.no_grad()
def input_gate_weights_(
    weight_ih: Tensor, hidden_size: int, bound: float, generator: torch.Generator | None = None
) -> Tensor:
    """Draw the input gate's input weights (the first H rows of a (4H, D) weight_ih) from
    U(-bound, bound).

    With chrono's closed input gates (b_i = -log u, so i = e^{w x} / u) a unit writes e^{w x}
    times more at an input x than on average: torch's bound 1/sqrt(H) (0.18 at H = 32) makes
    every unit nearly unselective at first, a bound of 1 or more lets some units start by
    favouring, e.g., a marker input (RESULTS.md, adding T = 10,000).
    """
    if not bound > 0:
        raise ValueError(f"bound must be positive for the input-gate weights, got {bound}")
    weight_ih[:hidden_size].uniform_(-bound, bound, generator=generator)
    return weight_ih


@torch.no_grad()
def orthogonal_recurrent_(weight_hh: Tensor, num_gates: int) -> Tensor:
    """Make each gate's (H, P) block of a (num_gates*H, P) recurrent weight (semi-)orthogonal:
    the recurrent Jacobian then neither shrinks nor grows signals at initialisation."""
    for block in weight_hh.chunk(num_gates, 0):
        nn.init.orthogonal_(block)
    return weight_hh


def uniform_bound(hidden_size: int) -> float:
    """torch.nn.LSTM's init bound 1/sqrt(H)."""
    return 1.0 / math.sqrt(hidden_size)
