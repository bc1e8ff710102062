"""The fused CPU backend: torch.library custom ops over the C++ kernels, and the backend API.

``lstm_layer`` and ``rnn_layer`` have the signatures of ``cellstate.kernels.reference``. Each runs
one custom op for the whole sequence (``cellstate::lstm_forward`` / ``cellstate::rnn_forward``)
whose backward is another custom op (``cellstate::lstm_backward`` / ``cellstate::rnn_backward``),
the hand-written BPTT. Both have fake implementations, so ``torch.compile(fullgraph=True)`` and
``torch.export`` see each layer as one opaque node; the C++ is built at the first real call. In
eager mode ``lstm_layer`` calls the same two kernels through an autograd.Function with the same
backward, without the ops' per-call dispatch (see ``_EagerLSTMForward``).

Each op's arguments, results, saved tensors and backward arguments follow from its description
(``LSTM``, ``RNN``: ``kernels/description.py``); the C++ entry points take the same arguments in
the same order (``entry_points.h``, compared by tests/kernels/test_opcheck.py).

A backward run with create_graph=True is itself differentiable (``_with_second_order``);
bfloat16 and float16 run in float32 between casts (``_in_float32``). The LSTM's bfloat16 keeps
its weight matrices in bfloat16: the kernel then runs its matrix products on bfloat16 operands
with float32 accumulation, as torch.nn.LSTM's bfloat16 (oneDNN) does; in eager mode the kernel
takes all its bfloat16 tensors as they are and casts the others itself (``lstm.cpp``,
``in_float32``), under torch.compile and tracing they go through ``_lstm_in_bf16_products``.

Shapes: T time, B batch, D input, H hidden, P output (proj_size or H), G gate rows (4H or 3H).
"""

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from cellstate.kernels import capture, reference
from cellstate.kernels.cpu import build
from cellstate.kernels.description import (
    LENGTHS_ARG,
    NOISE_ARGS,
    Arg,
    OpDescription,
    Out,
    SequenceDims,
    tensor_args,
)
from cellstate.kernels.params import LSTMLayerParams, RNNLayerParams, StepNoise
from cellstate.kernels.reference import reverse_index, time_gather

KERNEL_DTYPES = (torch.float32, torch.float64)  # what the C++ computes in
BF16 = torch.bfloat16
HALF_DTYPES = (BF16, torch.float16)  # stored in half precision, computed in float32
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
    if x.dtype not in KERNEL_DTYPES + HALF_DTYPES:
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


PRODUCT_WEIGHTS = ("w_ih", "w_hh", "w_hr")  # the LSTM's matrices
# Whether bfloat16 LSTMs run their products on bfloat16 operands (else in float32, as float16)
BF16_PRODUCTS = True


def _lstm_in_bf16_products(x: Tensor, h0: Tensor, c0: Tensor, p: LSTMLayerParams, *args):
    """lstm_layer on bfloat16 x and matrices as oneDNN's bfloat16 LSTM runs it: the matrix
    products (per step, and the backward's over the whole sequence) on bfloat16 operands with
    float32 accumulation; everything else (states, gates, cell math, gradient sums) in
    float32. The matrices reach the kernel in bfloat16, all else through _in_float32; without a
    bfloat16 brgemm on this CPU, the kernel multiplies the same values in float32. (Eager calls
    skip it: the kernel makes the same casts itself.)"""
    matrices = {n: getattr(p, n) for n in PRODUCT_WEIGHTS if getattr(p, n) is not None}

    def layer(x, h0, c0, p_float32, *rest):
        return lstm_layer(x, h0, c0, dataclasses.replace(p_float32, **matrices), *rest)

    return _in_float32(layer, x, h0, c0, p, *args)


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


# ---- the ops' autograd, from their descriptions ----------------------------------------------


def _backward(op: OpDescription, kernel, ctx, grads, recompute) -> tuple[Tensor | None, ...]:
    """One gradient (or None) per forward input from the backward kernel, made differentiable
    under create_graph (``_with_second_order``; recompute(saved) gives the forward's outputs)."""
    d_outputs = [d for d, out in zip(grads, op.outputs, strict=True) if out.grad]
    saved, needs = ctx.saved_tensors, ctx.needs_input_grad
    result = kernel(*d_outputs, *saved, *ctx.flags, needs[0])  # need_dx
    r = dict(zip(op.grad_inputs, result, strict=True))
    grads = tuple([r[a.name] if a.grad and needs[k] else None for k, a in enumerate(op.inputs)])
    if not torch.is_grad_enabled():
        return grads
    s = dict(zip(op.saved, saved, strict=True))
    return _with_second_order(
        grads, [s.get(n) for n in op.input_names], d_outputs, lambda: recompute(s, *ctx.flags)
    )


def _grads_fake(op: OpDescription, args) -> tuple[Tensor, ...]:
    """The backward op's results: each like its input, empty for an absent one (and for x
    without need_dx)."""
    s = dict(zip(op.backward_names, args, strict=True))
    if not s["need_dx"]:
        s["x"] = None
    return tuple(
        torch.empty_like(s[n]) if s[n] is not None else s["h0"].new_empty(0) for n in op.grad_inputs
    )


def _define(name: str, op: OpDescription, raw_forward, raw_backward, dims):
    """The custom ops ``cellstate::<name>_forward`` and ``cellstate::<name>_backward`` over the
    C++ entry points (raw_forward, raw_backward), their schemas and fakes from ``op``; the fake
    forward allocates the shapes of ``op.outputs`` at dims(named arguments), in x's dtype (w_hh's
    for a ``low`` one)."""
    forward = torch.library.custom_op(
        f"cellstate::{name}_forward", raw_forward, mutates_args=(), schema=op.forward_schema()
    )
    backward = torch.library.custom_op(
        f"cellstate::{name}_backward", raw_backward, mutates_args=(), schema=op.backward_schema()
    )

    @forward.register_fake
    def _forward_fake(*args):
        a = dict(zip(op.input_names, args, strict=True))
        return tuple(
            a["w_hh" if o.low else "x"].new_empty(shape)
            for o, shape in zip(op.outputs, op.shapes(dims(a)), strict=True)
        )

    backward.register_fake(lambda *args: _grads_fake(op, args))
    return forward, backward


# ---- LSTM --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LSTMDims:
    T: int
    B: int
    G: int
    H: int
    P: int
    records: bool  # return_states
    save: bool
    zoneout_c: bool
    ln_hh: bool
    layer_norm: bool  # any of ln_ih, ln_hh, ln_c_weight


def _lstm_dims(a: dict) -> _LSTMDims:
    T, B, _ = a["x"].shape
    G, P = a["w_hh"].shape
    return _LSTMDims(
        T=T, B=B, G=G, H=G // (4 if a["forget_gate"] else 3), P=P,
        records=a["return_states"], save=a["save"], zoneout_c=a["zoneout_c"] is not None,
        ln_hh=a["ln_hh"] is not None,
        layer_norm=any(a[n] is not None for n in ("ln_ih", "ln_hh", "ln_c_weight")),
    )  # fmt: skip


LSTM = OpDescription(
    inputs=(
        Arg("x", "Tensor", grad=True),  # (T, B, D)
        Arg("h0", "Tensor", grad=True),  # (B, P)
        Arg("c0", "Tensor", grad=True),  # (B, H)
        *tensor_args(LSTMLayerParams),
        *NOISE_ARGS,
        LENGTHS_ARG,
        Arg("forget_gate", "bool"),
        Arg("return_states", "bool", saved=False),
        Arg("save", "bool", saved=False),  # return what backward reads (under autograd)
    ),
    outputs=(
        Out("output", lambda d: (d.T, d.B, d.P), grad=True),  # backward's h_{t-1}
        Out("h_n", lambda d: (d.B, d.P), grad=True, saved=False),
        Out("c_n", lambda d: (d.B, d.H), grad=True, saved=False),
        Out("records", lambda d: (5, d.T, d.B, d.H) if d.records else None, grad=True, saved=False),
        # activated i, f, g, o (in bfloat16 with bfloat16 matrices: bfloat16 products)
        Out("gates", lambda d: (d.T, d.B, d.G) if d.save else None, low=True),
        Out("cells", lambda d: (d.T, d.B, d.H) if d.save else None),  # c~ before zoneout
        Out("c_states", lambda d: (d.T, d.B, d.H) if d.save and d.zoneout_c else None),
        Out("ln_hw", lambda d: (d.T, d.B, d.G) if d.save and d.ln_hh else None),  # LN(W_hh h)
        Out("ln_stats", lambda d: (d.T, d.B, LN_STATS) if d.save and d.layer_norm else None),
    ),
    backward_flags=("need_dx",),
)
"""``cellstate::lstm_forward``: one LSTM layer-direction. Records are c, i, f, g, o (with
return_states). ``cellstate::lstm_backward``: BPTT through it, the gradient of x, h0, c0 and
each parameter. The C++ entry points take the same arguments (``entry_points.h``)."""
LSTM_PARAMS = tuple(a.name for a in tensor_args(LSTMLayerParams))
NOISE = tuple(a.name for a in NOISE_ARGS)


def _raw_lstm_forward(*args) -> tuple[Tensor, ...]:
    return tuple(build.load().lstm_forward(*args))


def _raw_lstm_backward(*args) -> tuple[Tensor, ...]:
    return tuple(build.load().lstm_backward(*args))


lstm_forward, lstm_backward = _define(
    "lstm", LSTM, _raw_lstm_forward, _raw_lstm_backward, _lstm_dims
)


def _lstm_setup_context(ctx, inputs, output):
    if not LSTM.save_for_backward(ctx, inputs, output)["save"]:
        raise RuntimeError("cellstate::lstm_forward was run with save=False under autograd")


def _lstm_backward(ctx, *grads, kernel=lstm_backward):
    return _backward(LSTM, kernel, ctx, grads, _lstm_reference)


def _lstm_reference(s: dict, forget_gate: bool) -> tuple[Tensor | None, ...]:
    """The reference forward of the saved inputs: output, h_n, c_n and the records
    (5, T, B, H), as lstm_forward returns them."""
    # (bfloat16 matrices with bfloat16 products: the reference in float32 on the same values,
    # its results in x's dtype)
    dtype = s["x"].dtype
    s = _converted(s, (torch.bfloat16,), torch.float32 if dtype == BF16 else dtype)
    p = LSTMLayerParams(**{n: s[n] for n in LSTM_PARAMS}, forget_gate=forget_gate)
    noise = StepNoise(**{n: s[n] for n in NOISE})
    output, h_n, c_n, states = reference.lstm_layer(
        s["x"], s["h0"], s["c0"], p, noise, s["lengths"], return_states=True
    )
    results = output, h_n, c_n, torch.stack([states[k] for k in "cifgo"])
    return _converted(results, (torch.float32,), dtype)


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


# _EagerLSTMForward.apply without Function.apply's Python wrapper, which on every call binds the
# 28 arguments through inspect.signature (for keyword arguments: none are passed here) and
# unwraps torch.func's dead wrappers (torch.func calls run the reference: unsupported()), ~30 us
# of a training call. The C++ apply it then calls is this one.
_eager_lstm_apply = super(torch.autograd.Function, _EagerLSTMForward).apply


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
    matrices = [getattr(p, n) for n in PRODUCT_WEIGHTS if getattr(p, n) is not None]
    # An ONNX graph has no bfloat16 LSTM (onnxruntime refuses one): it computes in float32.
    bf16_products = BF16_PRODUCTS and not capture.onnx_exporting()
    if bf16_products and x.dtype == BF16 and all(w.dtype == BF16 for w in matrices):
        if torch.compiler.is_compiling() or torch.jit.is_tracing():
            return _lstm_in_bf16_products(x, h0, c0, p, noise, lengths, reverse, return_states)
        # Eager: the kernel takes the bfloat16 tensors themselves and makes the same float32
        # copies (lstm.cpp, in_float32), without an autograd node and a Python call for each.
    elif x.dtype in HALF_DTYPES:
        return _in_float32(lstm_layer, x, h0, c0, p, noise, lengths, reverse, return_states)
    noise = noise or StepNoise()
    T, B, _ = x.shape
    if reverse:
        index = reverse_index(lengths, T, B, x.device)
        x = time_gather(x, index)
    if lengths is not None:
        lengths = lengths.to(device="cpu", dtype=torch.int64)
    params = [getattr(p, n) for n in LSTM_PARAMS]  # (a list: torch.compile traces it)
    save = _needs_grad(x, h0, c0, *params)
    if torch.jit.is_tracing():
        # A traced graph is replayed with grad on and off (and jit.trace's check reruns it
        # under no_grad): it always saves what backward needs.
        save = True
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        run = lstm_forward
    else:
        run = _eager_lstm_apply if save else _raw_lstm_forward
    masks = [getattr(noise, n) for n in NOISE]
    output, h_n, c_n, records, *_ = run(
        x, h0, c0, *params, *masks, lengths, p.forget_gate, return_states, save
    )
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


RNN = OpDescription(
    inputs=(
        Arg("x", "Tensor", grad=True),  # (T, B, D)
        Arg("h0", "Tensor", grad=True),  # (B, H)
        *tensor_args(RNNLayerParams),
        LENGTHS_ARG,
        Arg("relu", "bool"),  # the nonlinearity: relu, else tanh
    ),
    outputs=(
        Out("output", lambda d: (d.T, d.B, d.H), grad=True),  # backward's h_{t-1}
        Out("h_n", lambda d: (d.B, d.H), grad=True, saved=False),
    ),
    backward_flags=("need_dx",),
)
"""``cellstate::rnn_forward``: one plain-RNN layer-direction. ``cellstate::rnn_backward``: BPTT
through it, the gradient of x, h0 and each parameter (``entry_points.h``)."""
RNN_PARAMS = tuple(a.name for a in tensor_args(RNNLayerParams))


def _raw_rnn_forward(*args) -> tuple[Tensor, ...]:
    return tuple(build.load().rnn_forward(*args))


def _raw_rnn_backward(*args) -> tuple[Tensor, ...]:
    return tuple(build.load().rnn_backward(*args))


def _rnn_dims(a: dict) -> SequenceDims:
    T, B, _ = a["x"].shape
    return SequenceDims(T=T, B=B, H=a["w_hh"].shape[0])


rnn_forward, rnn_backward = _define("rnn", RNN, _raw_rnn_forward, _raw_rnn_backward, _rnn_dims)


def _rnn_setup_context(ctx, inputs, output):
    RNN.save_for_backward(ctx, inputs, output)


def _rnn_backward(ctx, *grads):
    return _backward(RNN, rnn_backward, ctx, grads, _rnn_reference)


def _rnn_reference(s: dict, relu: bool) -> tuple[Tensor, Tensor]:
    """The reference forward of the saved inputs: output, h_n."""
    p = RNNLayerParams(**{n: s[n] for n in RNN_PARAMS}, nonlinearity="relu" if relu else "tanh")
    return reference.rnn_layer(s["x"], s["h0"], p, s["lengths"])[:2]


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
    params = [getattr(p, n) for n in RNN_PARAMS]
    output, h_n = rnn_forward(x, h0, *params, lengths, p.nonlinearity == "relu")
    if reverse:
        output = time_gather(output, index)
    return output, h_n, ({"h": output} if return_states else None)
