"""The fused CPU backend: torch.library custom ops over the C++ kernels, and the backend API.

``lstm_layer`` and ``rnn_layer`` have the signatures of ``cellstate.kernels.reference``. Each runs
one custom op for the whole sequence (``cellstate::lstm_forward`` / ``cellstate::rnn_forward``)
whose backward is another custom op (``cellstate::lstm_backward`` / ``cellstate::rnn_backward``),
the hand-written BPTT. Both have fake implementations, so ``torch.compile(fullgraph=True)`` and
``torch.export`` see each layer as one opaque node; the C++ is built at the first real call. In
eager mode ``lstm_layer`` calls the same two kernels through an autograd.Function with the same
backward, without the ops' per-call dispatch (see ``_EagerLSTMForward``).

A backward run with create_graph=True is itself differentiable (``_with_second_order``);
bfloat16 and float16 run in float32 between casts (``_in_float32``).

Shapes: T time, B batch, D input, H hidden, P output (proj_size or H), G gate rows (4H or 3H).
"""

import dataclasses

import torch
from torch import Tensor

from cellstate.kernels import reference
from cellstate.kernels.cpu import build
from cellstate.kernels.params import LSTMLayerParams, RNNLayerParams, StepNoise
from cellstate.kernels.reference import reverse_index, time_gather

DTYPES = (torch.float32, torch.float64)
HALF_DTYPES = (torch.bfloat16, torch.float16)  # stored in half precision, computed in float32
LN_STATS = 5  # per row: mean and rstd of W_ih x, rstd of W_hh h, mean and rstd of c


def unsupported(x: Tensor) -> str | None:
    """Why this backend cannot run on x (device, dtype, a torch.func transform), or None."""
    # torch.func's grad, vjp, jacrev and vmap wrap tensors (in x or in the parameters) in ways
    # the C++ kernel cannot read; the reference is plain torch ops, which they all transform.
    # torch.autograd.Function.apply asks the same question the same way.
    if torch._C._are_functorch_transforms_active():
        return "torch.func transforms (grad, vjp, jacrev, vmap) run the reference backend"
    if x.device.type != "cpu":
        return f"the cpu kernel runs CPU tensors only; got a {x.device.type} tensor"
    if x.dtype not in DTYPES + HALF_DTYPES:
        return (
            "the cpu kernel runs float32, float64, bfloat16 and float16 (the last two computed "
            f"in float32); got {x.dtype}"
        )
    return None


def _converted(obj, source: tuple[torch.dtype, ...], dtype: torch.dtype):
    """obj with every tensor of a dtype in source cast to dtype (through tuples, dicts and the
    parameter dataclasses); the casts are differentiable."""
    if isinstance(obj, Tensor):
        return obj.to(dtype) if obj.dtype in source else obj
    if isinstance(obj, tuple):
        return tuple(_converted(o, source, dtype) for o in obj)
    if isinstance(obj, dict):
        return {k: _converted(v, source, dtype) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj):
        fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
        tensors = {k: v for k, v in fields.items() if isinstance(v, Tensor)}
        return dataclasses.replace(obj, **_converted(tensors, source, dtype))
    return obj


def _in_float32(layer, x: Tensor, *args, **kwargs):
    """layer run on float32 copies of x and of the half-precision tensors in args (parameters,
    noise), its results cast back to x's dtype: half-precision storage, float32 arithmetic and
    states throughout the sequence. Gradients come back through the casts in each dtype."""
    results = layer(x.float(), *_converted(args, HALF_DTYPES, torch.float32), **kwargs)
    return _converted(results, (torch.float32,), x.dtype)


def _none_if_empty(t: Tensor, present: bool) -> Tensor | None:
    return t if present else None


def _with_second_order(grads, inputs, grad_outputs, recompute):
    """The kernel's gradients of inputs, made differentiable under create_graph=True.

    The hand-written backward is not itself differentiable. When backward runs with grad mode
    on (create_graph), the reference forward is recomputed from the saved inputs (recompute()
    returns the outputs that grad_outputs belong to) and differentiated with create_graph; each
    gradient becomes kernel + (ref - ref.detach()): exactly the kernel's value, carrying the
    reference's graph, so second-order gradients are those of the equations.
    """
    pairs = enumerate(zip(grads, inputs, strict=True))
    wanted = [k for k, (grad, t) in pairs if grad is not None and t.requires_grad]
    if not torch.is_grad_enabled() or not wanted:
        return grads
    with torch.enable_grad():
        pairs = [
            (out, grad)
            for out, grad in zip(recompute(), grad_outputs, strict=True)
            if grad is not None and out.requires_grad
        ]
        exact = torch.autograd.grad(
            [out for out, _ in pairs],
            [inputs[k] for k in wanted],
            [grad for _, grad in pairs],
            create_graph=True,
            materialize_grads=True,
        )
    grads = list(grads)
    for k, ref in zip(wanted, exact, strict=True):
        grads[k] = grads[k].detach() + (ref - ref.detach())
    return tuple(grads)


# ---- LSTM --------------------------------------------------------------------------------


@torch.library.custom_op("cellstate::lstm_forward", mutates_args=())
def lstm_forward(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    w_hr: Tensor | None,
    w_ci: Tensor | None,
    w_cf: Tensor | None,
    w_co: Tensor | None,
    ln_ih: Tensor | None,
    ln_hh: Tensor | None,
    ln_c_weight: Tensor | None,
    ln_c_bias: Tensor | None,
    zoneout_h: Tensor | None,
    zoneout_c: Tensor | None,
    recurrent_mask: Tensor | None,
    lengths: Tensor | None,
    forget_gate: bool,
    return_states: bool,
    save: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One LSTM layer-direction. Returns output (T, B, P), h_n (B, P), c_n (B, H), records
    (5, T, B, H): c, i, f, g, o (with return_states), and with save what backward needs: gates
    (T, B, G), c~ (T, B, H), c after zoneout (T, B, H), normalised W_hh h (T, B, G), layer-norm
    statistics (T, B, 5). Absent results are empty tensors."""
    return tuple(
        build.load().lstm_forward(
            x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_ci, w_cf, w_co, ln_ih, ln_hh,
            ln_c_weight, ln_c_bias, zoneout_h, zoneout_c, recurrent_mask, lengths,
            forget_gate, return_states, save,
        )
    )  # fmt: skip


@lstm_forward.register_fake
def _lstm_forward_fake(
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_ci, w_cf, w_co, ln_ih, ln_hh, ln_c_weight,
    ln_c_bias, zoneout_h, zoneout_c, recurrent_mask, lengths, forget_gate, return_states, save,
):  # fmt: skip
    T, B, _ = x.shape
    G, P = w_hh.shape
    H = G // (4 if forget_gate else 3)
    empty = x.new_empty

    def maybe(on: bool, *shape: int) -> Tensor:
        return empty(shape) if on else empty(0)

    layer_norm = ln_ih is not None or ln_hh is not None or ln_c_weight is not None
    return (
        empty(T, B, P),
        empty(B, P),
        empty(B, H),
        maybe(return_states, 5, T, B, H),
        maybe(save, T, B, G),
        maybe(save, T, B, H),
        maybe(save and zoneout_c is not None, T, B, H),
        maybe(save and ln_hh is not None, T, B, G),
        maybe(save and layer_norm, T, B, LN_STATS),
    )


@torch.library.custom_op("cellstate::lstm_backward", mutates_args=())
def lstm_backward(
    grad_output: Tensor | None,
    grad_h_n: Tensor | None,
    grad_c_n: Tensor | None,
    grad_records: Tensor | None,
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    output: Tensor,
    gates: Tensor,
    cells: Tensor,
    c_states: Tensor | None,
    ln_hw: Tensor | None,
    ln_stats: Tensor | None,
    w_ih: Tensor,
    w_hh: Tensor,
    has_bias: bool,
    w_hr: Tensor | None,
    w_ci: Tensor | None,
    w_cf: Tensor | None,
    w_co: Tensor | None,
    ln_ih: Tensor | None,
    ln_hh: Tensor | None,
    ln_c_weight: Tensor | None,
    ln_c_bias: Tensor | None,
    zoneout_h: Tensor | None,
    zoneout_c: Tensor | None,
    recurrent_mask: Tensor | None,
    lengths: Tensor | None,
    forget_gate: bool,
    need_dx: bool,
) -> tuple[
    Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
    Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
]:  # fmt: skip
    """BPTT through one LSTM layer-direction. Returns the gradients of x, h0, c0, w_ih, w_hh,
    the bias (b_ih and b_hh share it), w_hr, w_ci, w_cf, w_co, ln_ih, ln_hh, ln_c_weight and
    ln_c_bias; empty tensors for those absent (and for x without need_dx)."""
    return tuple(
        build.load().lstm_backward(
            grad_output, grad_h_n, grad_c_n, grad_records, x, h0, c0, output, gates, cells,
            c_states, ln_hw, ln_stats, w_ih, w_hh, has_bias, w_hr, w_ci, w_cf, w_co, ln_ih,
            ln_hh, ln_c_weight, ln_c_bias, zoneout_h, zoneout_c, recurrent_mask, lengths,
            forget_gate, need_dx,
        )
    )  # fmt: skip


@lstm_backward.register_fake
def _lstm_backward_fake(
    grad_output, grad_h_n, grad_c_n, grad_records, x, h0, c0, output, gates, cells, c_states,
    ln_hw, ln_stats, w_ih, w_hh, has_bias, w_hr, w_ci, w_cf, w_co, ln_ih, ln_hh, ln_c_weight,
    ln_c_bias, zoneout_h, zoneout_c, recurrent_mask, lengths, forget_gate, need_dx,
):  # fmt: skip
    def like(t: Tensor | None, on: bool = True) -> Tensor:
        return torch.empty_like(t) if on and t is not None else x.new_empty(0)

    return (
        like(x, need_dx),
        like(h0),
        like(c0),
        like(w_ih),
        like(w_hh),
        x.new_empty(w_ih.shape[0]) if has_bias else x.new_empty(0),
        like(w_hr),
        like(w_ci),
        like(w_cf),
        like(w_co),
        like(ln_ih),
        like(ln_hh),
        like(ln_c_weight),
        like(ln_c_bias),
    )


_LSTM_SAVED = (
    "x h0 c0 output gates cells c_states ln_hw ln_stats w_ih w_hh b_ih b_hh w_hr w_ci w_cf w_co "
    "ln_ih ln_hh ln_c_weight ln_c_bias zoneout_h zoneout_c recurrent_mask lengths"
).split()


_LSTM_INPUTS = (
    "x h0 c0 w_ih w_hh b_ih b_hh w_hr w_ci w_cf w_co ln_ih ln_hh ln_c_weight ln_c_bias "
    "zoneout_h zoneout_c recurrent_mask lengths forget_gate return_states save"
).split()


def _lstm_setup_context(ctx, inputs, output):
    a = dict(zip(_LSTM_INPUTS, inputs, strict=True))
    out, _, _, _, gates, cells, c_states, ln_hw, ln_stats = output
    if not a["save"]:
        raise RuntimeError("cellstate::lstm_forward was run with save=False under autograd")
    ctx.mark_non_differentiable(gates, cells, c_states, ln_hw, ln_stats)
    ctx.set_materialize_grads(False)  # unused outputs get None, not (T, B, G) zeros
    layer_norm = any(a[k] is not None for k in ("ln_ih", "ln_hh", "ln_c_weight"))
    saved = {**a, "output": out, "gates": gates, "cells": cells}
    saved["c_states"] = _none_if_empty(c_states, a["zoneout_c"] is not None)
    saved["ln_hw"] = _none_if_empty(ln_hw, a["ln_hh"] is not None)
    saved["ln_stats"] = _none_if_empty(ln_stats, layer_norm)
    ctx.save_for_backward(*(saved[k] for k in _LSTM_SAVED))
    ctx.biases = (a["b_ih"] is not None, a["b_hh"] is not None)
    ctx.forget_gate = a["forget_gate"]


def _lstm_backward(ctx, d_output, d_h_n, d_c_n, d_records, *_, kernel=lstm_backward):
    s = dict(zip(_LSTM_SAVED, ctx.saved_tensors, strict=True))
    need_dx = ctx.needs_input_grad[0]
    grads = kernel(
        d_output, d_h_n, d_c_n, d_records,
        s["x"], s["h0"], s["c0"], s["output"], s["gates"], s["cells"], s["c_states"],
        s["ln_hw"], s["ln_stats"], s["w_ih"], s["w_hh"], any(ctx.biases), s["w_hr"],
        s["w_ci"], s["w_cf"], s["w_co"], s["ln_ih"], s["ln_hh"], s["ln_c_weight"],
        s["ln_c_bias"], s["zoneout_h"], s["zoneout_c"], s["recurrent_mask"], s["lengths"],
        ctx.forget_gate, need_dx,
    )  # fmt: skip
    dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr, dw_ci, dw_cf, dw_co, dln_ih, dln_hh, dln_cw, dln_cb = (
        grads
    )
    has_b_ih, has_b_hh = ctx.biases

    def present(name: str, grad: Tensor) -> Tensor | None:
        return grad if s[name] is not None else None

    grads = (
        dx if need_dx else None,
        dh0,
        dc0,
        dw_ih,
        dw_hh,
        db if has_b_ih else None,
        (db.clone() if has_b_ih else db) if has_b_hh else None,
        present("w_hr", dw_hr),
        present("w_ci", dw_ci),
        present("w_cf", dw_cf),
        present("w_co", dw_co),
        present("ln_ih", dln_ih),
        present("ln_hh", dln_hh),
        present("ln_c_weight", dln_cw),
        present("ln_c_bias", dln_cb),
    )
    grads = _with_second_order(
        grads,
        [s[name] for name in _LSTM_INPUTS[: len(grads)]],
        (d_output, d_h_n, d_c_n, d_records),
        lambda: _lstm_reference(s, ctx.forget_gate, d_records is not None),
    )
    return (*grads, *[None] * (len(_LSTM_INPUTS) - len(grads)))  # masks, lengths, flags


def _lstm_reference(s: dict, forget_gate: bool, records: bool) -> tuple[Tensor | None, ...]:
    """The reference forward of the saved inputs: output, h_n, c_n and (with records) the
    records (5, T, B, H), as lstm_forward returns them."""
    fields = "w_ih w_hh b_ih b_hh w_hr w_ci w_cf w_co ln_ih ln_hh ln_c_weight ln_c_bias".split()
    p = LSTMLayerParams(**{k: s[k] for k in fields}, forget_gate=forget_gate)
    noise = StepNoise(s["zoneout_h"], s["zoneout_c"], s["recurrent_mask"])
    output, h_n, c_n, states = reference.lstm_layer(
        s["x"], s["h0"], s["c0"], p, noise, s["lengths"], return_states=records
    )
    stacked = torch.stack([states[k] for k in "cifgo"]) if records else None
    return output, h_n, c_n, stacked


lstm_forward.register_autograd(_lstm_backward, setup_context=_lstm_setup_context)


class _EagerLSTMForward(torch.autograd.Function):
    """The two kernels with the autograd registered above, called directly in eager mode: the
    custom ops' dispatch costs more than the kernels at small shapes (torch.library's autograd
    wrapper alone refills the 22 default arguments on every call, re-reading the schema for each:
    ~120 us a call on torch 2.13). torch.compile and torch.export trace the ops themselves."""

    @staticmethod
    def forward(*inputs):
        return _raw_lstm_forward(*inputs)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _lstm_setup_context(ctx, inputs, output)

    @staticmethod
    def backward(ctx, *grads):
        return _lstm_backward(ctx, *grads, kernel=_raw_lstm_backward)


def _raw_lstm_forward(*args) -> tuple[Tensor, ...]:
    return tuple(build.load().lstm_forward(*args))


def _raw_lstm_backward(*args) -> tuple[Tensor, ...]:
    return tuple(build.load().lstm_backward(*args))


def _needs_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


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
    """One LSTM layer over a sequence: ``cellstate.kernels.reference.lstm_layer``, fused."""
    reason = unsupported(x)
    if reason:
        raise NotImplementedError(reason)
    if x.shape[1] == 0:  # an empty batch: nothing to fuse; the reference gives torch's shapes
        return reference.lstm_layer(x, h0, c0, p, noise, lengths, reverse, return_states)
    if x.dtype in HALF_DTYPES:
        return _in_float32(lstm_layer, x, h0, c0, p, noise, lengths, reverse, return_states)
    noise = noise or StepNoise()
    T, B, _ = x.shape
    if reverse:
        index = reverse_index(lengths, T, B, x.device)
        x = time_gather(x, index)
    if lengths is not None:
        lengths = lengths.to(device="cpu", dtype=torch.int64)
    params = (p.w_ih, p.w_hh, p.b_ih, p.b_hh, p.w_hr, p.w_ci, p.w_cf, p.w_co)
    params += (p.ln_ih, p.ln_hh, p.ln_c_weight, p.ln_c_bias)
    save = _needs_grad(x, h0, c0, *params)
    if torch.jit.is_tracing():
        # A traced graph is replayed with grad on and off (and jit.trace's check reruns it
        # under no_grad): it always saves what backward needs.
        save = True
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        run = lstm_forward
    else:
        run = _EagerLSTMForward.apply if save else _raw_lstm_forward
    output, h_n, c_n, records, *_ = run(
        x, h0, c0, *params, noise.zoneout_h, noise.zoneout_c, noise.recurrent_mask, lengths,
        p.forget_gate, return_states, save,
    )  # fmt: skip
    states = None
    if return_states:
        c, i, f, g, o = records.unbind(0)  # each (T, B, H)
        if not p.forget_gate:
            f = f.detach()  # the constant 1 of the 1997 cell, as in the reference
        states = {"h": output, "c": c, "i": i, "f": f, "g": g, "o": o}
    if reverse:
        output = time_gather(output, index)
        if states is not None:
            states = {k: time_gather(v, index) for k, v in states.items()}
    return output, h_n, c_n, states


# ---- RNN ---------------------------------------------------------------------------------


@torch.library.custom_op("cellstate::rnn_forward", mutates_args=())
def rnn_forward(
    x: Tensor,
    h0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    lengths: Tensor | None,
    relu: bool,
) -> tuple[Tensor, Tensor]:
    """One plain-RNN layer-direction: output (T, B, H) (also what backward needs), h_n (B, H)."""
    return tuple(build.load().rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, relu))


@rnn_forward.register_fake
def _rnn_forward_fake(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, relu):
    T, B, _ = x.shape
    return x.new_empty(T, B, w_ih.shape[0]), torch.empty_like(h0)


@torch.library.custom_op("cellstate::rnn_backward", mutates_args=())
def rnn_backward(
    grad_output: Tensor | None,
    grad_h_n: Tensor | None,
    x: Tensor,
    h0: Tensor,
    output: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    lengths: Tensor | None,
    relu: bool,
    has_bias: bool,
    need_dx: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """BPTT through one RNN layer-direction: gradients of x, h0, w_ih, w_hh and the bias."""
    return tuple(
        build.load().rnn_backward(
            grad_output, grad_h_n, x, h0, output, w_ih, w_hh, lengths, relu, has_bias, need_dx
        )
    )


@rnn_backward.register_fake
def _rnn_backward_fake(
    grad_output, grad_h_n, x, h0, output, w_ih, w_hh, lengths, relu, has_bias, need_dx
):
    return (
        torch.empty_like(x) if need_dx else x.new_empty(0),
        torch.empty_like(h0),
        torch.empty_like(w_ih),
        torch.empty_like(w_hh),
        x.new_empty(w_ih.shape[0]) if has_bias else x.new_empty(0),
    )


def _rnn_setup_context(ctx, inputs, output):
    x, h0, w_ih, w_hh, b_ih, b_hh, lengths, relu = inputs
    ctx.save_for_backward(x, h0, output[0], w_ih, w_hh, b_ih, b_hh, lengths)
    ctx.set_materialize_grads(False)
    ctx.biases = (b_ih is not None, b_hh is not None)
    ctx.relu = relu


def _rnn_backward(ctx, d_output, d_h_n):
    x, h0, output, w_ih, w_hh, b_ih, b_hh, lengths = ctx.saved_tensors
    need_dx = ctx.needs_input_grad[0]
    has_b_ih, has_b_hh = ctx.biases
    dx, dh0, dw_ih, dw_hh, db = rnn_backward(
        d_output, d_h_n, x, h0, output, w_ih, w_hh, lengths, ctx.relu, has_b_ih or has_b_hh,
        need_dx,
    )  # fmt: skip
    grads = (
        dx if need_dx else None,
        dh0,
        dw_ih,
        dw_hh,
        db if has_b_ih else None,
        (db.clone() if has_b_ih else db) if has_b_hh else None,
    )
    p = RNNLayerParams(w_ih, w_hh, b_ih, b_hh, "relu" if ctx.relu else "tanh")
    grads = _with_second_order(
        grads,
        [x, h0, w_ih, w_hh, b_ih, b_hh],
        (d_output, d_h_n),
        lambda: reference.rnn_layer(x, h0, p, lengths)[:2],
    )
    return (*grads, None, None)  # lengths, relu


rnn_forward.register_autograd(_rnn_backward, setup_context=_rnn_setup_context)


def rnn_layer(
    x: Tensor,
    h0: Tensor,
    p: RNNLayerParams,
    lengths: Tensor | None = None,
    reverse: bool = False,
    return_states: bool = False,
) -> tuple[Tensor, Tensor, dict[str, Tensor] | None]:
    """One plain-RNN layer over a sequence: ``cellstate.kernels.reference.rnn_layer``, fused."""
    reason = unsupported(x)
    if reason:
        raise NotImplementedError(reason)
    if x.shape[1] == 0:  # an empty batch: nothing to fuse; the reference gives torch's shapes
        return reference.rnn_layer(x, h0, p, lengths, reverse, return_states)
    if p.nonlinearity not in ("tanh", "relu"):
        raise NotImplementedError(f"nonlinearity must be 'tanh' or 'relu'; got {p.nonlinearity!r}")
    if x.dtype in HALF_DTYPES:
        return _in_float32(rnn_layer, x, h0, p, lengths, reverse, return_states)
    T, B, _ = x.shape
    if reverse:
        index = reverse_index(lengths, T, B, x.device)
        x = time_gather(x, index)
    if lengths is not None:
        lengths = lengths.to(device="cpu", dtype=torch.int64)
    output, h_n = rnn_forward(
        x, h0, p.w_ih, p.w_hh, p.b_ih, p.b_hh, lengths, p.nonlinearity == "relu"
    )
    if reverse:
        output = time_gather(output, index)
    return output, h_n, ({"h": output} if return_states else None)
