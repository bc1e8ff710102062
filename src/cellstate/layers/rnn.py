"""cellstate.RNN: the seed's plain recurrent network, drop-in compatible with torch.nn.RNN."""

from __future__ import annotations

import torch
from torch import Tensor

from cellstate.kernels import dispatch
from cellstate.kernels.params import RNNLayerParams
from cellstate.layers.base import RecurrentBase
from cellstate.layers.states import RecurrentStates


class RNN(RecurrentBase):
    r"""A multi-layer Elman RNN, drop-in compatible with :class:`torch.nn.RNN`.

    Per layer and direction, for each step t::

        h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),   act = tanh (default) or relu

    Backpropagation through time multiplies the gradient by W_hh^T diag(act') at every step,
    so it shrinks or grows geometrically with the lag: the vanishing/exploding gradient that
    the LSTM's cell state avoids.

    Arguments, parameter names (``weight_ih_l{k}`` (H, D_k), ``weight_hh_l{k}`` (H, H),
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` (H,), suffix ``_reverse``), initialisation, inputs and
    returns are torch.nn.RNN's: ``input`` (T, B, D), (B, T, D) with ``batch_first``, (T, D)
    unbatched, or a PackedSequence; ``hx`` (L*dirs, B, H); returns ``output, h_n`` with
    ``output`` (T, B, dirs*H). With ``return_states=True`` (constructor or forward) it returns
    ``output, h_n, states`` where ``states.h`` is (L, dirs, T, B, H): every layer's h_t.

    Example::

        >>> import torch, cellstate
        >>> rnn = cellstate.RNN(2, 16, nonlinearity="tanh")
        >>> output, h_n = rnn(torch.randn(50, 4, 2))
        >>> output.shape, h_n.shape
        (torch.Size([50, 4, 16]), torch.Size([1, 4, 16]))
    """

    def __init__(self, *args, return_states: bool = False, backend: str = "auto", **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if len(args) > 3:
            nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'."
            )
        if not isinstance(return_states, bool):
            raise ValueError(f"return_states must be True or False; got {return_states!r}")
        self.nonlinearity = nonlinearity
        self.return_states = return_states
        hidden_size = args[1] if len(args) > 1 else kwargs.get("hidden_size")
        super().__init__(hidden_size, *args, backend=backend, **kwargs)

    def _layer_params(self, layer: int, direction: int) -> RNNLayerParams:
        sfx = self._layer_suffix(layer, direction)
        return RNNLayerParams(
            w_ih=self._autocast(getattr(self, "weight_ih" + sfx)),
            w_hh=self._autocast(getattr(self, "weight_hh" + sfx)),
            b_ih=self._autocast(getattr(self, "bias_ih" + sfx, None)),
            b_hh=self._autocast(getattr(self, "bias_hh" + sfx, None)),
            nonlinearity=self.nonlinearity,
        )

    def forward(self, input, hx: Tensor | None = None, return_states=None):
        """Run the RNN; see the class docstring for shapes and returns."""
        want_states = self.return_states if return_states is None else return_states
        x, lengths, layout = self._prepare_input(input)
        if hx is not None:
            self._check_state_dims((hx,), layout)
        h0 = self._prepare_state(hx, x, layout, self.hidden_size, "Expected hidden size {}, got {}")
        kernel = dispatch.select(self.backend, x)

        h_n, records = [], []
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                out, h, _ = kernel.rnn_layer(
                    layer_input,
                    h0[layer * self.num_directions + direction],
                    self._layer_params(layer, direction),
                    lengths,
                    reverse=direction == 1,
                )
                outputs.append(out)
                h_n.append(h)
            records.append(torch.stack(outputs))  # (dirs, T, B, H): the RNN's h_t is its output
            output = torch.cat(outputs, -1) if len(outputs) > 1 else outputs[0]  # (T, B, dirs*H)
            layer_input = self._layer_dropout(output, layer)

        result = (
            self._finish_output(output, lengths, layout),
            self._finish_state(torch.stack(h_n), layout),
        )
        if not want_states:
            return result
        return (*result, RecurrentStates(h=self._finish_record(torch.stack(records), layout)))

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s
