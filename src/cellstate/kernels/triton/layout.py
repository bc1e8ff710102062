"""The one description of the Triton LSTM op: what it reads, what it writes, what backward keeps.

The op schema, the fake implementation (the allocation below, shared with the real one), the
saved-tensor list and the argument unpacking of the forward and backward ops all follow from
``LSTM_INPUTS`` and ``LSTM_OUTPUTS``; a new variant adds its tensor to ``LSTMLayerParams`` (or
``StepNoise``) and its math to the kernels.

The input side of a layer (W_ih, b_ih, b_hh and the layer norm of W_ih x) is one whole-sequence
computation outside the recurrence: ``xa = LN_ih(x W_ih^T) + b_ih + b_hh`` (T, B, G) is formed
with torch ops before the op, so autograd differentiates it with whole-sequence GEMMs
(dW_ih = da^T x, dx = da W_ih) and the op only returns da = d xa.

Shapes: T time, B batch, H hidden, P output (proj_size or H), G gate rows (4H; 3H without a
forget gate). "compute" is the dtype of xa: float32 (float64 for float64 tensors).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from cellstate.kernels.params import LSTMLayerParams, StepNoise

INPUT_SIDE = ("w_ih", "b_ih", "b_hh", "ln_ih")  # applied before the op (see above)


@dataclass(frozen=True)
class Arg:
    """An argument of the forward op."""

    name: str
    kind: str  # schema type: "Tensor", "Tensor?" or "bool"
    grad: bool = False  # differentiable: backward returns its gradient
    saved: bool = True  # backward reads it


def _recurrent_params() -> tuple[Arg, ...]:
    names = [f.name for f in fields(LSTMLayerParams) if not isinstance(f.default, bool)]
    return tuple(
        Arg(n, "Tensor" if n == "w_hh" else "Tensor?", grad=True)
        for n in names
        if n not in INPUT_SIDE
    )


LSTM_INPUTS: tuple[Arg, ...] = (
    Arg("xa", "Tensor", grad=True, saved=False),  # (T, B, G) compute
    Arg("h0", "Tensor", grad=True),  # (B, P)
    Arg("c0", "Tensor", grad=True),  # (B, H)
    *_recurrent_params(),  # w_hh, w_hr, peepholes, the layer-norm gains of W_hh h and c
    *(Arg(f.name, "Tensor?") for f in fields(StepNoise)),  # zoneout masks, recurrent mask
    Arg("lengths", "Tensor?"),  # (B,) int64 on the device
    Arg("forget_gate", "bool"),
)


@dataclass(frozen=True)
class Dims:
    T: int
    B: int
    G: int
    H: int
    P: int
    projection: bool
    ln_hh: bool
    layer_norm: bool


@dataclass(frozen=True)
class Out:
    """An output of the forward op: shape (None: absent, an empty tensor), dtype, role."""

    name: str
    shape: Callable[[Dims], tuple[int, ...] | None]
    low: bool = False  # in the weights' dtype (16-bit stays 16-bit), not the compute dtype
    grad: bool = False  # differentiable output
    saved: bool = True  # backward reads it


LSTM_OUTPUTS: tuple[Out, ...] = (
    Out("output", lambda d: (d.T, d.B, d.P), low=True, grad=True, saved=False),
    Out("h_all", lambda d: (d.T + 1, d.B, d.P), grad=True, saved=False),  # h0, states
    Out("c_all", lambda d: (d.T + 1, d.B, d.H), grad=True),  # c0, states after zoneout
    Out("gates", lambda d: (d.T, d.B, d.G), grad=True),  # i, f, g, o after activation
    Out("cell", lambda d: (d.T, d.B, d.H)),  # c before zoneout
    Out("hin", lambda d: (d.T, d.B, d.P), low=True),  # GEMM input h * recurrent mask
    Out("y", lambda d: (d.T, d.B, d.H) if d.projection else None, low=True),  # o tanh(LN c)
    Out("n_hh", lambda d: (d.T, d.B, d.G) if d.ln_hh else None),  # normalised W_hh h
    Out("stats", lambda d: (d.T, d.B, 3) if d.layer_norm else None),  # rstd_hh, mean_c, rstd_c
)

# The optional weights the step kernels read, in their argument order: the peepholes and the
# layer-norm gains (the projection w_hr is a GEMM between kernels)
VARIANT_WEIGHTS = tuple(
    a.name for a in LSTM_INPUTS if a.kind == "Tensor?" and a.grad and a.name != "w_hr"
)
GRAD_OUTPUTS = tuple(o.name for o in LSTM_OUTPUTS if o.grad)
GRAD_INPUTS = tuple(a.name for a in LSTM_INPUTS if a.grad)
SAVED = tuple(a.name for a in LSTM_INPUTS if a.saved and a.kind != "bool") + tuple(
    o.name for o in LSTM_OUTPUTS if o.saved
)


def forward_schema() -> str:
    args = ", ".join(f"{a.kind} {a.name}" for a in LSTM_INPUTS)
    return f"({args}) -> ({', '.join('Tensor' for _ in LSTM_OUTPUTS)})"


def backward_schema() -> str:
    args = [f"Tensor? d_{n}" for n in GRAD_OUTPUTS]
    kinds = {a.name: a.kind for a in LSTM_INPUTS}
    args += [f"{kinds.get(n, 'Tensor')} {n}" for n in SAVED] + ["bool forget_gate"]
    return f"({', '.join(args)}) -> ({', '.join('Tensor' for _ in GRAD_INPUTS)})"


def allocate_outputs(a: dict[str, Tensor | None]) -> dict[str, Tensor]:
    """Every forward output, uninitialised, from the forward arguments ``a`` (by name)."""
    xa, h0, c0, w_hh = a["xa"], a["h0"], a["c0"], a["w_hh"]
    T, B, G = xa.shape
    dims = Dims(
        T=T, B=B, G=G, H=c0.shape[-1], P=h0.shape[-1],
        projection=a["w_hr"] is not None,
        ln_hh=a["ln_hh"] is not None,
        layer_norm=a["ln_hh"] is not None or a["ln_c_weight"] is not None,
    )  # fmt: skip
    result = {}
    for out in LSTM_OUTPUTS:
        shape = out.shape(dims)
        dtype = w_hh.dtype if out.low else xa.dtype
        result[out.name] = xa.new_empty(shape if shape is not None else (0,), dtype=dtype)
    return result


def allocate_grads(s: dict[str, Tensor | None]) -> dict[str, Tensor]:
    """Every backward result, uninitialised, from the saved tensors ``s``: shaped like its
    input, empty for an absent one; d xa like the gates."""
    s = {**s, "xa": s["gates"]}
    return {
        n: torch.empty_like(s[n]) if s[n] is not None else s["gates"].new_empty(0)
        for n in GRAD_INPUTS
    }
