"""The Triton LSTM as two torch.library custom ops, ``cellstate::triton_lstm_forward`` and
``cellstate::triton_lstm_backward`` (the hand-written BPTT), with fakes and autograd, all
derived from the description in ``layout``.

Per step forward: one recurrent GEMM (torch.mm, cuBLAS on CUDA) and one fused Triton kernel
(``lstm_kernels.lstm_forward_step``); with a projection one more GEMM and a small kernel. Per
step backward: one kernel and one GEMM (with a projection, a second of each). After the loop,
dW_hh, dW_hr and the peephole and layer-norm gradients are whole-sequence GEMMs and sums: no
atomics anywhere, so the same inputs give bit-identical gradients. Where ``stage_for`` says
"B", the persistent kernels (``persistent_ops``) run the same steps on the same buffers in one
launch each way instead of the per-step loops.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from cellstate.kernels.reference import LAYER_NORM_EPS
from cellstate.kernels.triton import launch, persistent_ops
from cellstate.kernels.triton.layout import (
    GRAD_INPUTS,
    GRAD_OUTPUTS,
    LSTM,
    LSTM_INPUTS,
    LSTM_OUTPUTS,
    SAVED,
    VARIANT_WEIGHTS,
    allocate_grads,
    allocate_outputs,
)

FORWARD = "cellstate::triton_lstm_forward"
BACKWARD = "cellstate::triton_lstm_backward"
INPUT_NAMES = LSTM.input_names
OUTPUT_NAMES = LSTM.output_names
BACKWARD_NAMES = LSTM.backward_names
DOUBLE_BACKWARD = (
    "backend='triton' has no double backward (create_graph=True through the LSTM's hand-written "
    "BPTT); use backend='reference' for higher-order gradients"
)

torch.library.define(FORWARD, LSTM.forward_schema())
torch.library.define(BACKWARD, LSTM.backward_schema())


STAGE_VARIABLE = "CELLSTATE_TRITON_STAGE"


def stage_for(shape: tuple[int, int, int, int]) -> str:
    """The recurrence that runs a layer of shape (T, B, H, P): "A", a GEMM and a fused kernel
    per step (every shape; the default until a GPU has measured both), or "B", the persistent
    kernel of ``persistent_ops`` (one launch each way), where CELLSTATE_TRITON_STAGE=B and the
    shape fits it; a shape that does not fit runs A."""
    stage = os.environ.get(STAGE_VARIABLE, "A")
    if stage not in ("A", "B"):
        raise ValueError(f"{STAGE_VARIABLE} must be A or B; got {stage!r}")
    return "B" if stage == "B" and persistent_ops.unsupported(shape) is None else "A"


def _flags(a: dict) -> dict[str, object]:
    """The compile-time switches of the kernels, from the op's arguments."""
    return dict(
        PEEPHOLE=a["w_ci"] is not None,
        LN_HH=a["ln_hh"] is not None,
        LN_C=a["ln_c_weight"] is not None,
        ZONEOUT_H=a["zoneout_h"] is not None,
        ZONEOUT_C=a["zoneout_c"] is not None,
        RMASK=a["recurrent_mask"] is not None,
        LENGTHS=a["lengths"] is not None,
    )


def _noise_args(a: dict, T: int, B: int, H: int, P: int, dummy: Tensor) -> tuple[tuple, tuple]:
    return (
        launch.zoneout_args(a["zoneout_h"], (T, B, P), dummy),
        launch.zoneout_args(a["zoneout_c"], (T, B, H), dummy),
    )


def _or(t: Tensor | None, dummy: Tensor) -> Tensor:
    return dummy if t is None else t


def _variant_weights(a: dict, dummy: Tensor) -> tuple[Tensor, ...]:
    """The variants' weights in the kernels' argument order (``layout.VARIANT_WEIGHTS``)."""
    return tuple(_or(a[n], dummy) for n in VARIANT_WEIGHTS)


@torch.library.impl(FORWARD, "default")
def _forward(*args):
    a = dict(zip(INPUT_NAMES, args, strict=True))
    o = allocate_outputs(a)
    k = launch.kernels("lstm_kernels")
    xa, h0, c0, w_hh, w_hr, rm = (
        a["xa"],
        a["h0"],
        a["c0"],
        a["w_hh"],
        a["w_hr"],
        a["recurrent_mask"],
    )
    T, B, G = xa.shape
    H, P = c0.shape[-1], h0.shape[-1]
    flags = _flags(a)
    zh, zc = _noise_args(a, T, B, H, P, xa)
    block_b, block_h, grid = launch.blocks(B, H)
    n_warps = launch.warps(block_b, block_h)
    block_bp, block_p, grid_p = launch.blocks(B, P, slots=1)
    o["h_all"][0] = h0
    o["c_all"][0] = c0
    o["hin"][0] = h0 if rm is None else h0 * rm
    hw = xa.new_empty(B, G, dtype=w_hh.dtype)
    hn = xa.new_empty(B, P, dtype=w_hh.dtype)
    step_args = (
        B, H, P, xa, hw, o["gates"], o["cell"], o["c_all"], o["h_all"], o["hin"], o["output"],
        o["y"], o["n_hh"], o["stats"], *_variant_weights(a, xa), *zh, *zc, _or(rm, xa),
        _or(a["lengths"], xa),
    )  # fmt: skip
    if stage_for((T, B, H, P)) == "B":
        persistent_ops.forward(
            T, step_args, w_hh, _or(w_hr, xa), hn, NG=G // H, PROJ=w_hr is not None,
            EPS=LAYER_NORM_EPS, **flags,
        )  # fmt: skip
        return tuple(o[n] for n in OUTPUT_NAMES)
    for t in range(T):
        write_hin = t + 1 < T
        torch.mm(o["hin"][t], w_hh.t(), out=hw)  # (B, G)
        k.lstm_forward_step[grid](
            t, *step_args, NG=G // H, PROJ=w_hr is not None, WRITE_HIN=write_hin,
            EPS=LAYER_NORM_EPS, BLOCK_B=block_b, BLOCK_H=block_h, num_warps=n_warps, **flags,
        )  # fmt: skip
        if w_hr is not None:
            torch.mm(o["y"][t], w_hr.t(), out=hn)  # (B, P)
            k.lstm_forward_projected[grid_p](
                t, B, P, hn, o["h_all"], o["hin"], o["output"], *zh, _or(rm, xa),
                _or(a["lengths"], xa), ZONEOUT_H=flags["ZONEOUT_H"], RMASK=flags["RMASK"],
                LENGTHS=flags["LENGTHS"], WRITE_HIN=write_hin, BLOCK_B=block_bp,
                BLOCK_P=block_p,
            )  # fmt: skip
    return tuple(o[n] for n in OUTPUT_NAMES)


@torch.library.register_fake(FORWARD)
def _forward_fake(*args):
    o = allocate_outputs(dict(zip(INPUT_NAMES, args, strict=True)))
    return tuple(o[n] for n in OUTPUT_NAMES)


@torch.library.impl(BACKWARD, "default")
def _backward(*args):
    s = dict(zip(BACKWARD_NAMES, args, strict=True))
    g = allocate_grads(s)
    k = launch.kernels("lstm_kernels")
    gates, c_all, cell, hin, w_hh, w_hr = (
        s[n] for n in ("gates", "c_all", "cell", "hin", "w_hh", "w_hr")
    )
    rm = s["recurrent_mask"]
    T, B, G = gates.shape
    H, P = cell.shape[-1], hin.shape[-1]
    NG = G // H
    flags = _flags(s)
    d_output, d_h_all, d_c_all, d_gates = (
        launch.contiguous_or_none(s[f"d_{n}"]) for n in GRAD_OUTPUTS
    )
    zh, zc = _noise_args(s, T, B, H, P, gates)
    block_b, block_h, grid = launch.blocks(B, H)
    n_warps = launch.warps(block_b, block_h)
    block_bp, block_p, grid_p = launch.blocks(B, P, slots=1)
    dh_carry = gates.new_zeros(B, P)
    dc_carry = gates.new_zeros(B, H)
    dh_gemm = hin.new_zeros(B, P)  # zero: Stage B adds it at the last step too
    da = g["xa"]  # (T, B, G): d xa, the gradient of the gate pre-activations
    dhw = hin.new_empty(T, B, G)
    dcs = gates.new_empty(T, B, H) if flags["LN_C"] else gates
    dhn = hin.new_empty(T, B, P) if w_hr is not None else hin
    dy = hin.new_empty(B, H)
    present = dict(
        HAS_DOUT=d_output is not None,
        HAS_DH_ALL=d_h_all is not None,
    )
    step_args = (
        B, H, P, dy, _or(d_output, gates), _or(d_h_all, gates), dh_carry, dh_gemm,
        _or(d_c_all, gates), dc_carry, _or(d_gates, gates), gates, cell, c_all,
        _or(s["n_hh"], gates), _or(s["stats"], gates), *_variant_weights(s, gates), *zh, *zc,
        _or(rm, gates), _or(s["lengths"], gates), da, dhw, dcs,
    )  # fmt: skip
    step_flags = dict(
        NG=NG, PROJ=w_hr is not None, HAS_DC_ALL=d_c_all is not None,
        HAS_DGATES=d_gates is not None, **flags, **present,
    )  # fmt: skip
    if stage_for((T, B, H, P)) == "B":
        persistent_ops.backward(T, step_args, w_hh, _or(w_hr, gates), dhn, **step_flags)
    else:
        for t in reversed(range(T)):
            has_gemm = t + 1 < T
            if w_hr is not None:
                k.lstm_backward_projected[grid_p](
                    t, B, P, _or(d_output, gates), _or(d_h_all, gates), dh_carry, dh_gemm,
                    dhn, *zh, _or(rm, gates), _or(s["lengths"], gates), HAS_GEMM=has_gemm,
                    ZONEOUT_H=flags["ZONEOUT_H"], RMASK=flags["RMASK"],
                    LENGTHS=flags["LENGTHS"], BLOCK_B=block_bp, BLOCK_P=block_p, **present,
                )  # fmt: skip
                torch.mm(dhn[t], w_hr, out=dy)  # (B, H)
            k.lstm_backward_step[grid](
                t, *step_args, HAS_GEMM=has_gemm, BLOCK_B=block_b, BLOCK_H=block_h,
                num_warps=n_warps, **step_flags,
            )  # fmt: skip
            torch.mm(dhw[t], w_hh, out=dh_gemm)  # (B, P)

    dh0 = dh_carry + (dh_gemm if rm is None else dh_gemm * rm)
    dc0 = dc_carry
    if d_h_all is not None:
        dh0 = dh0 + d_h_all[0]
    if d_c_all is not None:
        dc0 = dc0 + d_c_all[0]
    g["h0"].copy_(dh0)
    g["c0"].copy_(dc0)
    # whole-sequence weight gradients: one GEMM or one sum each
    g["w_hh"].copy_(dhw.view(T * B, G).t() @ hin.view(T * B, P))
    if w_hr is not None:
        g["w_hr"].copy_(dhn.view(T * B, P).t() @ s["y"].view(T * B, H))
    if flags["PEEPHOLE"]:
        gate = da.view(T, B, NG, H)
        g["w_ci"].copy_((gate[:, :, 0] * c_all[:-1]).sum((0, 1)))
        g["w_co"].copy_((gate[:, :, NG - 1] * cell).sum((0, 1)))
        if NG == 4:
            g["w_cf"].copy_((gate[:, :, 1] * c_all[:-1]).sum((0, 1)))
        elif s["w_cf"] is not None:
            g["w_cf"].zero_()  # unused without a forget gate
    if flags["LN_HH"]:
        g["ln_hh"].copy_((da * s["n_hh"]).sum((0, 1)))
    if flags["LN_C"]:
        stats = s["stats"]
        normalised = (cell - stats[..., 1:2]) * stats[..., 2:3]  # (T, B, H)
        g["ln_c_weight"].copy_((dcs * normalised).sum((0, 1)))
        g["ln_c_bias"].copy_(dcs.sum((0, 1)))
    return tuple(g[n] for n in GRAD_INPUTS)


@torch.library.register_fake(BACKWARD)
def _backward_fake(*args):
    g = allocate_grads(dict(zip(BACKWARD_NAMES, args, strict=True)))
    return tuple(g[n] for n in GRAD_INPUTS)


def _setup_context(ctx, inputs, output):
    a = dict(zip(INPUT_NAMES, inputs, strict=True))
    o = dict(zip(OUTPUT_NAMES, output, strict=True))
    ctx.mark_non_differentiable(*(o[out.name] for out in LSTM_OUTPUTS if not out.grad))
    ctx.set_materialize_grads(False)  # unused outputs get None, not zeros
    saved = {**a, **o}
    ctx.save_for_backward(*(saved[n] for n in SAVED))
    ctx.present = {n: a[n] is not None for n in GRAD_INPUTS}
    ctx.forget_gate = a["forget_gate"]


def _autograd_backward(ctx, *grads):
    if torch.is_grad_enabled():
        raise RuntimeError(DOUBLE_BACKWARD)
    by_output = dict(zip(OUTPUT_NAMES, grads, strict=True))
    result = torch.ops.cellstate.triton_lstm_backward(
        *(by_output[n] for n in GRAD_OUTPUTS), *ctx.saved_tensors, ctx.forget_gate
    )
    r = dict(zip(GRAD_INPUTS, result, strict=True))
    return tuple(r[a.name] if a.grad and ctx.present[a.name] else None for a in LSTM_INPUTS)


torch.library.register_autograd(FORWARD, _autograd_backward, setup_context=_setup_context)


def lstm_forward(**arguments) -> dict[str, Tensor]:
    """Run the forward op on named arguments (those of ``layout.LSTM_INPUTS``); named outputs."""
    result = torch.ops.cellstate.triton_lstm_forward(*(arguments[n] for n in INPUT_NAMES))
    return dict(zip(OUTPUT_NAMES, result, strict=True))
