"""The description of the Triton LSTM op: what it reads, what it writes, what backward keeps.

The op schemas, the fake implementation (the allocation below, shared with the real one), the
saved-tensor list and the argument unpacking of the forward and backward ops all follow from
``LSTM`` (a ``kernels.description.OpDescription``, built from the same ordered field lists of
``kernels/params.py`` as the CPU ops); a new variant adds its tensor to ``LSTMLayerParams`` (or
``StepNoise``) and its math to the kernels.

The input side of a layer (W_ih, b_ih, b_hh and the layer norm of W_ih x) is one whole-sequence
computation outside the recurrence: ``xa = LN_ih(x W_ih^T) + b_ih + b_hh`` (T, B, G) is formed
with torch ops before the op, so autograd differentiates it with whole-sequence GEMMs
(dW_ih = da^T x, dx = da W_ih) and the op only returns da = d xa. The op's layer tensors are
therefore those of ``LSTMLayerParams`` less ``INPUT_SIDE``.

Shapes: T time, B batch, H hidden, P output (proj_size or H), G gate rows (4H; 3H without a
forget gate). "compute" is the dtype of xa: float32 (float64 for float64 tensors).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from cellstate.kernels.description import (
    LENGTHS_ARG,
    NOISE_ARGS,
    Arg,
    OpDescription,
    Out,
    tensor_args,
)
from cellstate.kernels.params import LSTMLayerParams

INPUT_SIDE = ("w_ih", "b_ih", "b_hh", "ln_ih")  # applied before the op (see above)


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


LSTM = OpDescription(
    inputs=(
        Arg("xa", "Tensor", grad=True, saved=False),  # (T, B, G) compute
        Arg("h0", "Tensor", grad=True),  # (B, P)
        Arg("c0", "Tensor", grad=True),  # (B, H)
        # w_hh, w_hr, peepholes, the layer-norm gains of W_hh h and c
        *tensor_args(LSTMLayerParams, leave_out=INPUT_SIDE),
        *NOISE_ARGS,  # zoneout masks, recurrent mask
        LENGTHS_ARG,  # (B,) int64 on the device
        Arg("forget_gate", "bool"),
    ),
    outputs=(
        Out("output", lambda d: (d.T, d.B, d.P), low=True, grad=True, saved=False),
        Out("h_all", lambda d: (d.T + 1, d.B, d.P), grad=True, saved=False),  # h0, states
        Out("c_all", lambda d: (d.T + 1, d.B, d.H), grad=True),  # c0, states after zoneout
        Out("gates", lambda d: (d.T, d.B, d.G), grad=True),  # i, f, g, o after activation
        Out("cell", lambda d: (d.T, d.B, d.H)),  # c before zoneout
        Out("hin", lambda d: (d.T, d.B, d.P), low=True),  # GEMM input h * recurrent mask
        Out("y", lambda d: (d.T, d.B, d.H) if d.projection else None, low=True),  # o tanh(LN c)
        Out("n_hh", lambda d: (d.T, d.B, d.G) if d.ln_hh else None),  # normalised W_hh h
        Out("stats", lambda d: (d.T, d.B, 3) if d.layer_norm else None),  # rstd_hh, mean/rstd c
    ),
)
LSTM_INPUTS = LSTM.inputs
LSTM_OUTPUTS = LSTM.outputs

# The optional weights the step kernels read, in their argument order: the peepholes and the
# layer-norm gains (the projection w_hr is a GEMM between kernels)
VARIANT_WEIGHTS = tuple(
    a.name for a in LSTM_INPUTS if a.kind == "Tensor?" and a.grad and a.name != "w_hr"
)
GRAD_OUTPUTS = LSTM.grad_outputs
GRAD_INPUTS = LSTM.grad_inputs
SAVED = LSTM.saved


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
    return {
        out.name: xa.new_empty(shape, dtype=w_hh.dtype if out.low else xa.dtype)
        for out, shape in zip(LSTM_OUTPUTS, LSTM.shapes(dims), strict=True)
    }


def allocate_grads(s: dict[str, Tensor | None]) -> dict[str, Tensor]:
    """Every backward result, uninitialised, from the saved tensors ``s``: shaped like its
    input, empty for an absent one; d xa like the gates."""
    s = {**s, "xa": s["gates"]}
    return {
        n: torch.empty_like(s[n]) if s[n] is not None else s["gates"].new_empty(0)
        for n in GRAD_INPUTS
    }
