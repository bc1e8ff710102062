"""cellstate.LSTM: a drop-in torch.nn.LSTM with the cell variants PyTorch lacks."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cellstate import init as initialisers
from cellstate.kernels import dispatch
from cellstate.kernels.masks import bernoulli_mask
from cellstate.kernels.params import LSTMLayerParams, StepNoise
from cellstate.kernels.records import LSTM_STATE_NAMES
from cellstate.layers.base import RecurrentBase, _autocast_enabled, _live
from cellstate.layers.states import RecurrentStates

INIT_SCHEMES = ("default", "chrono", "orthogonal")
# Each tensor field of LSTMLayerParams and the module's parameter (before the layer's suffix)
PARAM_NAMES = {
    "w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh",
    "w_hr": "weight_hr", "w_ci": "weight_ci", "w_cf": "weight_cf", "w_co": "weight_co",
    "ln_ih": "layer_norm_ih", "ln_hh": "layer_norm_hh", "ln_c_weight": "layer_norm_c_weight",
    "ln_c_bias": "layer_norm_c_bias",
}  # fmt: skip


def _probability(name: str, value) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a probability in [0, 1); got {value!r}")
    return float(value)


class LSTM(RecurrentBase):
    r"""A multi-layer LSTM, drop-in compatible with :class:`torch.nn.LSTM`, plus variants.

    Per layer and direction, for each step t (gate order i, f, g, o, as in PyTorch)::

        i_t = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)
        f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)
        g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)
        o_t = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho)
        c_t = f_t * c_{t-1} + i_t * g_t        (the cell state: the conveyor belt)
        h_t = o_t * tanh(c_t)                  (h_t = W_hr h_t with proj_size > 0)

    The positional arguments, parameter names and shapes (``weight_ih_l{k}`` (4H, D_k),
    ``weight_hh_l{k}`` (4H, P), ``bias_ih_l{k}``, ``bias_hh_l{k}`` (4H,), ``weight_hr_l{k}``
    (P, H), suffix ``_reverse``), initialisation, inputs and returns are torch.nn.LSTM's:
    ``input`` (T, B, D), (B, T, D) with ``batch_first``, (T, D) unbatched, or a PackedSequence;
    ``hx = (h_0, c_0)`` of shapes (L*dirs, B, P) and (L*dirs, B, H); returns
    ``output, (h_n, c_n)`` with ``output`` (T, B, dirs*P). ``load_state_dict`` takes a
    torch.nn.LSTM ``state_dict`` and vice versa.

    Variants (keyword-only, off by default, composable):

    * ``forget_bias=b``: add b to the forget-gate bias at init (Gers et al. 2000;
      Jozefowicz et al. 2015).
    * ``init="chrono", t_max=T``: b_f ~ log U(1, T - 1), b_i = -b_f (Tallec & Ollivier 2018).
      ``init="orthogonal"``: each gate block of W_hh orthogonal. Combine as
      ``init=("chrono", "orthogonal")``.
    * ``forget_gate=False``: the 1997 cell (Hochreiter & Schmidhuber), c_t = c_{t-1} + i_t g_t,
      the constant error carousel. Gate rows are then i, g, o (3H).
    * ``peephole=True`` (Gers & Schmidhuber 2000): a_i += w_ci * c_{t-1},
      a_f += w_cf * c_{t-1}, a_o += w_co * c_t; new (H,) parameters ``weight_ci_l{k}``,
      ``weight_cf_l{k}``, ``weight_co_l{k}``, initialised like the others.
    * ``layer_norm=True`` (Ba, Kiros & Hinton 2016): a_t = LN(W_ih x_t; gamma_ih) + b_ih +
      LN(W_hh h_{t-1}; gamma_hh) + b_hh and h_t = o_t * tanh(LN(c_t; gamma_c, beta_c)); new
      parameters ``layer_norm_ih_l{k}``, ``layer_norm_hh_l{k}`` (G,), ``layer_norm_c_weight_l{k}``,
      ``layer_norm_c_bias_l{k}`` (H,), initialised to 1 and 0. The biases b act as LN offsets.
    * ``zoneout=z`` or ``(z_h, z_c)`` (Krueger et al. 2016): in training each unit keeps its
      previous value with probability z (h_t = d h_{t-1} + (1 - d) h~_t, d ~ Bernoulli(z),
      drawn by a counter-based hash seeded from torch's generator: ``kernels/masks.py``);
      in evaluation the expectation z h_{t-1} + (1 - z) h~_t, as the paper prescribes.
    * ``recurrent_dropout=p`` (Gal & Ghahramani 2016): in training h_{t-1} is multiplied by one
      dropout mask per sequence (the same at every step) before W_hh.
    * ``return_states=True``: ``forward`` returns ``output, (h_n, c_n), states``, a
      :class:`~cellstate.RecurrentStates` with every step's h, c, i, f, g, o of every layer.
      ``forward(..., return_states=True)`` asks for it on one call.
    * ``backend``: ``"auto"`` (default: the CPU kernel for CPU tensors, else the reference),
      ``"reference"`` (pure PyTorch, the spec), ``"cpu"`` (the fused C++ kernel) or ``"triton"``
      (the GPU kernels); ``cellstate.kernels.dispatch`` chooses and says why it falls back.

    Example::

        >>> import torch, cellstate
        >>> lstm = cellstate.LSTM(2, 16, num_layers=2, peephole=True, forget_bias=1.0)
        >>> x = torch.randn(100, 8, 2)                      # (T, B, D)
        >>> output, (h_n, c_n), states = lstm(x, return_states=True)
        >>> output.shape, h_n.shape, states.c.shape
        (torch.Size([100, 8, 16]), torch.Size([2, 8, 16]), torch.Size([2, 1, 100, 8, 16]))
    """

    _name = "LSTM"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
        *,
        forget_bias: float = 0.0,
        init: str | Sequence[str] = "default",
        t_max: float | None = None,
        forget_gate: bool = True,
        peephole: bool = False,
        layer_norm: bool = False,
        zoneout: float | tuple[float, float] = 0.0,
        recurrent_dropout: float = 0.0,
        return_states: bool = False,
        backend: str = "auto",
    ) -> None:
        for name, flag in (
            ("forget_gate", forget_gate),
            ("peephole", peephole),
            ("layer_norm", layer_norm),
            ("return_states", return_states),
        ):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be True or False; got {flag!r}")
        schemes = (init,) if isinstance(init, str) else tuple(init)
        unknown = [s for s in schemes if s not in INIT_SCHEMES]
        if unknown or not schemes:
            raise ValueError(f"init must be one or more of {INIT_SCHEMES}; got {init!r}")
        if not isinstance(forget_bias, numbers.Real) or isinstance(forget_bias, bool):
            raise ValueError(f"forget_bias must be a number; got {forget_bias!r}")
        if "chrono" in schemes:
            if t_max is None:
                raise ValueError('init="chrono" needs t_max (the longest dependency expected)')
            if not isinstance(t_max, numbers.Real) or not t_max > 2:
                raise ValueError(f"t_max must be a number greater than 2; got {t_max!r}")
        elif t_max is not None:
            raise ValueError('t_max is only used with init="chrono"')
        needs_forget_bias = "chrono" in schemes or forget_bias != 0
        if needs_forget_bias and not forget_gate:
            raise ValueError("forget_bias and init='chrono' need a forget gate (forget_gate=True)")
        if needs_forget_bias and not bias:
            raise ValueError("forget_bias and init='chrono' need biases (bias=True)")
        z = zoneout if isinstance(zoneout, tuple | list) else (zoneout, zoneout)
        if len(z) != 2:
            raise ValueError(f"zoneout must be a probability or a pair (z_h, z_c); got {zoneout!r}")
        self.zoneout = (_probability("zoneout", z[0]), _probability("zoneout", z[1]))
        self.recurrent_dropout = _probability("recurrent_dropout", recurrent_dropout)

        self.forget_gate = forget_gate
        self.peephole = peephole
        self.layer_norm = layer_norm
        self.forget_bias = float(forget_bias)
        self.init = schemes
        self.t_max = t_max
        self.return_states = return_states
        self.num_gates = 4 if forget_gate else 3
        if not isinstance(hidden_size, int) or isinstance(hidden_size, bool):
            gate_size = hidden_size  # let the base class raise torch's TypeError
        else:
            gate_size = self.num_gates * hidden_size
        super().__init__(
            gate_size,
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            proj_size,
            device,
            dtype,
            backend,
        )
        # Variant parameters come after all standard ones, so that the standard ones draw the
        # same random numbers as torch.nn.LSTM's under the same seed.
        factory = {"device": device, "dtype": dtype}
        for layer in range(num_layers):
            for direction in range(self.num_directions):
                sfx = self._layer_suffix(layer, direction)
                if peephole:
                    for gate in ("i", "f", "o") if forget_gate else ("i", "o"):
                        self._new(f"weight_c{gate}{sfx}", (hidden_size,), factory)
                if layer_norm:
                    self._new(f"layer_norm_ih{sfx}", (gate_size,), factory)
                    self._new(f"layer_norm_hh{sfx}", (gate_size,), factory)
                    self._new(f"layer_norm_c_weight{sfx}", (hidden_size,), factory)
                    self._new(f"layer_norm_c_bias{sfx}", (hidden_size,), factory)
        self._variants_built = True
        self._reset_variant_parameters()

    def _new(self, name: str, shape: tuple[int, ...], factory: dict) -> None:
        setattr(self, name, nn.Parameter(torch.empty(shape, **factory)))

    @property
    def variants_on(self) -> list[str]:
        """The variants that change the computation (not just the initialisation)."""
        on = []
        if not self.forget_gate:
            on.append("forget_gate=False")
        if self.peephole:
            on.append("peephole")
        if self.layer_norm:
            on.append("layer_norm")
        if any(self.zoneout):
            on.append("zoneout")
        if self.recurrent_dropout:
            on.append("recurrent_dropout")
        return on

    def reset_parameters(self) -> None:
        """torch.nn.LSTM's uniform init, then the variants' init (see the class docstring)."""
        super().reset_parameters()
        if getattr(self, "_variants_built", False):  # the base constructor calls this early
            self._reset_variant_parameters()

    @torch.no_grad()
    def _reset_variant_parameters(self) -> None:
        bound = initialisers.uniform_bound(self.hidden_size)
        for name, param in self.named_parameters():
            if name.startswith("weight_c"):  # peepholes
                param.uniform_(-bound, bound)
            elif name.startswith("layer_norm_c_bias"):
                param.zero_()
            elif name.startswith("layer_norm_"):
                param.fill_(1.0)
        H = self.hidden_size
        for layer in range(self.num_layers):
            for direction in range(self.num_directions):
                sfx = self._layer_suffix(layer, direction)
                if self.forget_bias:
                    initialisers.forget_bias_(getattr(self, f"bias_ih{sfx}"), H, self.forget_bias)
                if "chrono" in self.init:
                    initialisers.chrono_(
                        getattr(self, f"bias_ih{sfx}"),
                        getattr(self, f"bias_hh{sfx}"),
                        H,
                        self.t_max,
                    )
                if "orthogonal" in self.init:
                    initialisers.orthogonal_recurrent_(
                        getattr(self, f"weight_hh{sfx}"), self.num_gates
                    )

    def _layer_params(self, layer: int, direction: int) -> LSTMLayerParams:
        # Per call, a dozen look-ups: one autocast check for all (they share a device), each
        # tensor read where Python's attribute look-up would find it, without Module.__getattr__
        # (~1 us) or, for an absent one, the error it raises (~2 us).
        params, buffers, attrs, cls = self._parameters, self._buffers, self.__dict__, type(self)

        def get(name: str) -> Tensor | None:
            if hasattr(cls, name) or name in attrs:  # a parametrization's property, a tensor
                return getattr(self, name)
            if name in params:
                return params[name]
            return buffers.get(name)

        sfx = self._layer_suffix(layer, direction)
        # (_live: a parameter passed in from a finished torch.func transform, e.g. captured in
        # functional_call's dict, is a dead wrapper that the C++ kernel cannot read; ~2 us)
        tensors = [get(name + sfx) for name in PARAM_NAMES.values()]
        tensors = [t if t is None else _live(t) for t in tensors]
        if _autocast_enabled(tensors[0].device.type):
            tensors = [self._autocast(t) for t in tensors]
        fields = dict(zip(PARAM_NAMES, tensors, strict=True))
        return LSTMLayerParams(**fields, forget_gate=self.forget_gate)

    def _step_noise(self, x: Tensor) -> StepNoise:
        """Zoneout masks and the recurrent-dropout mask for one layer-direction."""
        T, B = x.shape[:2]
        P, H = self.proj_size or self.hidden_size, self.hidden_size
        z_h, z_c = self.zoneout

        def zoneout(z: float, size: int) -> Tensor | None:
            if z == 0:
                return None
            if self.training:
                return bernoulli_mask((T, B, size), z, x)
            return x.new_tensor(z)

        mask = None
        if self.recurrent_dropout and self.training:
            keep = 1.0 - self.recurrent_dropout
            # Drawn at least in float32: a bfloat16 keep probability is rounded (0.9 -> 0.898).
            dtype = torch.promote_types(x.dtype, torch.float32)
            mask = (torch.bernoulli(x.new_full((B, P), keep, dtype=dtype)) / keep).to(x.dtype)
        return StepNoise(zoneout(z_h, P), zoneout(z_c, H), mask)

    def forward(self, input, hx: tuple[Tensor, Tensor] | None = None, return_states=None):
        """Run the LSTM; see the class docstring for shapes and returns."""
        want_states = self.return_states if return_states is None else return_states
        x, lengths, layout = self._prepare_input(input)
        if hx is not None:
            if not isinstance(hx, tuple | list) or len(hx) != 2:
                raise TypeError("LSTM: hx must be a tuple (h_0, c_0)")
            self._check_state_dims(tuple(hx), layout)
        P = self.proj_size or self.hidden_size
        h0 = self._prepare_state(
            hx[0] if hx else None, x, layout, P, "Expected hidden[0] size {}, got {}"
        )
        c0 = self._prepare_state(
            hx[1] if hx else None, x, layout, self.hidden_size, "Expected hidden[1] size {}, got {}"
        )
        kernel = dispatch.select(self.backend, x)

        h_n, c_n, records = [], [], []
        layer_input = x
        for layer in range(self.num_layers):
            outputs, layer_records = [], []
            for direction in range(self.num_directions):
                k = layer * self.num_directions + direction
                out, h, c, states = kernel.lstm_layer(
                    layer_input,
                    h0[k],
                    c0[k],
                    self._layer_params(layer, direction),
                    self._step_noise(layer_input),
                    lengths,
                    reverse=direction == 1,
                    return_states=want_states,
                )
                outputs.append(out)
                h_n.append(h)
                c_n.append(c)
                layer_records.append(states)
            output = torch.cat(outputs, -1) if len(outputs) > 1 else outputs[0]  # (T, B, dirs*P)
            layer_input = self._layer_dropout(output, layer)
            records.append(layer_records)

        result = (
            self._finish_output(output, lengths, layout),
            (
                self._finish_state(torch.stack(h_n), layout),
                self._finish_state(torch.stack(c_n), layout),
            ),
        )
        if not want_states:
            return result
        stacked = {
            name: self._finish_record(
                torch.stack([torch.stack([r[name] for r in rs]) for rs in records]), layout
            )
            for name in LSTM_STATE_NAMES
        }  # each (L, dirs, T, B, X)
        return (*result, RecurrentStates(**stacked))

    @classmethod
    def from_torch(cls, module: nn.LSTM, **variants) -> LSTM:
        """A cellstate.LSTM with ``module``'s configuration and weights (a copy).

        ``variants`` may set keyword options that add no parameters (e.g. ``backend``).
        """
        if not isinstance(module, nn.LSTM):
            raise TypeError(f"from_torch expects a torch.nn.LSTM, got {type(module).__name__}")
        weight = module.weight_ih_l0
        new = cls(
            module.input_size,
            module.hidden_size,
            module.num_layers,
            module.bias,
            module.batch_first,
            module.dropout,
            module.bidirectional,
            module.proj_size,
            device=weight.device,
            dtype=weight.dtype,
            **variants,
        )
        new.load_state_dict(module.state_dict())
        return new.train(module.training)

    def to_torch(self) -> nn.LSTM:
        """A torch.nn.LSTM with this module's configuration and weights (a copy).

        Raises ValueError when a variant that torch.nn.LSTM cannot express is on.
        """
        if self.variants_on:
            raise ValueError(
                "to_torch: torch.nn.LSTM has no equivalent for " + ", ".join(self.variants_on)
            )
        weight = self.weight_ih_l0
        module = nn.LSTM(
            self.input_size,
            self.hidden_size,
            self.num_layers,
            self.bias,
            self.batch_first,
            self.dropout,
            self.bidirectional,
            self.proj_size,
            device=weight.device,
            dtype=weight.dtype,
        )
        module.load_state_dict(self.state_dict())
        return module.train(self.training)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.forget_bias:
            s += f", forget_bias={self.forget_bias}"
        if self.init != ("default",):
            s += f", init={self.init[0] if len(self.init) == 1 else self.init!r}"
        if self.t_max is not None:
            s += f", t_max={self.t_max}"
        for variant in self.variants_on:
            s += f", {variant}"
        return s
