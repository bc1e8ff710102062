"""Every step's states and gate values, returned by ``forward`` when ``return_states=True``."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class RecurrentStates:
    """Every step's hidden state (and, for the LSTM, cell state and gates) of every layer.

    Each field is a tensor of shape (L, dirs, T, B, X) for time-major input,
    (L, dirs, B, T, X) with ``batch_first=True`` and (L, dirs, T, X) for unbatched input, where
    L = num_layers, dirs = 2 if bidirectional else 1, X = P (proj_size or hidden_size) for ``h``
    and hidden_size for the others. Packed input gives the time-major padded layout, in the
    caller's batch order. Steps past a sequence's length hold zeros. Direction 1 (reverse) is
    indexed by input position, like the layer's output.

    Fields: ``h`` hidden state h_t (after projection and zoneout, i.e. what the next step sees);
    LSTM only: ``c`` cell state c_t, and the gate activations ``i`` (input), ``f`` (forget; all
    ones for the cell without a forget gate), ``g`` (candidate), ``o`` (output).
    """

    h: Tensor
    c: Tensor | None = None
    i: Tensor | None = None
    f: Tensor | None = None
    g: Tensor | None = None
    o: Tensor | None = None
