"""ONNX translations of the kernel's custom ops, for the default exporter (``dynamo=True``).

Usage (dynamic T and B; every variant in evaluation mode)::

    torch.onnx.export(
        model.eval(), (x,), "model.onnx", dynamo=True, dynamic_shapes=({0: "T", 1: "B"},)
    )

No table to pass: ``register`` puts the translations in onnxscript's torchlib registry, where
the exporter looks for every op's translation, and ``import cellstate`` arranges for it to run
when that registry is imported (``export/onnx_registration.py``). ``translation_table()`` gives
the same translations as a ``custom_translation_table``.

Each layer-direction is one ``cellstate::lstm_forward`` / ``cellstate::rnn_forward`` node in the
exported program (a reverse direction's time reversal is ordinary torch ops around it). It
becomes ONNX's own ``LSTM`` / ``RNN`` operator where that expresses the cell exactly (float32;
the LSTM with biases or not, peepholes, variable lengths), else a ``Scan`` over time whose body
is the reference's step (``kernels/reference.py``): projection, layer norm, the cell without a
forget gate, zoneout's expectation, float64. ONNX's LSTM orders gates i, o, f, c where torch
orders them i, f, g, o, and its peepholes i, o, f.

The ops see float32 or float64 only: a bfloat16 or float16 layer runs them between casts to
float32 (``_in_float32`` in kernels/cpu/ops.py), so its graph computes in float32 between Cast
nodes, which onnxruntime runs (ONNX's LSTM has no bfloat16; onnxruntime's CPU MatMul neither).

Shapes: T time, B batch, D input, H hidden, P output (proj_size or H), G gate rows (4H or 3H).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx_ir as ir
import onnxscript
from onnxscript import opset18 as op

from cellstate.kernels.cpu import ops as cpu  # registers torch.ops.cellstate.*
from cellstate.kernels.reference import LAYER_NORM_EPS

Value = ir.Value


def translation_table() -> dict[Callable, Callable]:
    """``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)`` (optional: the
    exporter finds the same translations without it, see ``register``)."""
    return {
        cpu.lstm_forward._opoverload: _lstm_forward,
        cpu.rnn_forward._opoverload: _rnn_forward,
    }


def register() -> None:
    """Register the translations in onnxscript's torchlib registry, from which
    ``torch.onnx.export(..., dynamo=True)`` builds its table of translations, as torchlib
    registers aten's. Idempotent. Run when that registry is first imported
    (``onnx_registration``), which is why it is imported here and not above."""
    from onnxscript.function_libs.torch_lib import registration

    for target, translation in translation_table().items():
        name = target._schema.name  # "cellstate::lstm_forward"
        if name not in registration.default_registry:
            registration.torch_op(name, trace_only=True)(translation)


# ---- the graph builders ----------------------------------------------------------------


def _empty(like: Value) -> Value:
    """An empty tensor of like's dtype: the outputs only backward reads."""
    dtype = like.dtype.numpy()
    return op.Constant(value=ir.tensor(np.zeros(0, dtype=dtype)))


def _onnx_gate_order(t: Value) -> Value:
    """Rows i, f, g, o (torch) -> i, o, f, c (ONNX); t (4H, ...)."""
    i, f, g, o = op.Split(t, axis=0, num_outputs=4)
    return op.Concat(i, o, f, g, axis=0)


def _recurrent_op_inputs(x, w_ih, w_hh, b_ih, b_hh, lengths, reorder) -> list[Value | None]:
    """X, W, R, B, sequence_lens of ONNX's LSTM / RNN for one forward direction."""
    w = op.Unsqueeze(reorder(w_ih), [0])  # (1, G, D)
    r = op.Unsqueeze(reorder(w_hh), [0])  # (1, G, H)
    b = None
    if b_ih is not None:
        b = op.Unsqueeze(op.Concat(reorder(b_ih), reorder(b_hh), axis=0), [0])  # (1, 2G)
    sequence_lens = None if lengths is None else op.Cast(lengths, to=ir.DataType.INT32)
    return [x, w, r, b, sequence_lens]


class _Step:
    """Builds a Scan body: the per-step graph, its inputs made with ``input``."""

    def __init__(self, dtype: ir.DataType):
        self.dtype = dtype
        self.tape = ir.tape.Tape()
        self.inputs: list[Value] = []

    def input(self, name: str, dtype: ir.DataType | None = None) -> Value:
        value = ir.val(name, dtype=dtype or self.dtype)
        self.inputs.append(value)
        return value

    def __call__(self, op_type: str, *inputs: Value | None, **attributes) -> Value:
        return self.tape.op(op_type, list(inputs), attributes or None)

    def graph(self, outputs: Sequence[Value]) -> ir.Graph:
        return ir.Graph(self.inputs, list(outputs), nodes=self.tape.nodes, name="step")


def _scan(
    cell: Callable,
    states: list[Value],
    step_inputs: list[Value],
    lengths: Value | None,
    x: Value,
) -> tuple[Value, list[Value]]:
    """Run ``cell(step, states, step_inputs) -> (new states, output)`` over time with a Scan:
    each element of step_inputs is (T, B, *), sliced per step. Past a sequence's length its
    states are held and its output is zero (reference.py). Returns output (T, B, *), states."""
    step = _Step(x.dtype)
    state_in = [step.input(f"state{k}") for k in range(len(states))]
    slices = [step.input(f"slice{k}", v.dtype) for k, v in enumerate(step_inputs)]
    new_states, out = cell(step, state_in, slices)
    scan_inputs = list(step_inputs)
    if lengths is not None:
        T = op.Shape(x, start=0, end=1)
        time = op.Range(op.Constant(value_int=0), op.Squeeze(T, [0]), op.Constant(value_int=1))
        valid = op.Less(op.Unsqueeze(time, [1]), op.Unsqueeze(lengths, [0]))  # (T, B)
        scan_inputs.append(op.Unsqueeze(valid, [2]))  # (T, B, 1)
        running = step.input("running", ir.DataType.BOOL)
        zero = op.Constant(value=ir.tensor(np.zeros((), dtype=x.dtype.numpy())))
        new_states = [
            step("Where", running, n, s) for n, s in zip(new_states, state_in, strict=True)
        ]
        out = step("Where", running, out, zero)
    body = step.graph([*new_states, out])
    scan = ir.Node(
        "", "Scan", [*states, *scan_inputs],
        ir.convenience.convert_attributes({"body": body, "num_scan_inputs": len(scan_inputs)}),
        num_outputs=len(states) + 1, version=op.version,
    )  # fmt: skip
    # The exporter's recorder gives a variadic op (op.Scan) one output: record the node itself.
    onnxscript.evaluator.default().nodes.append(scan)
    *final_states, output = scan.outputs
    return output, final_states


def _layer_norm(step: Callable, t: Value, weight: Value, bias: Value | None = None) -> Value:
    return step("LayerNormalization", t, weight, bias, axis=-1, epsilon=LAYER_NORM_EPS)


def _outer_layer_norm(t: Value, weight: Value) -> Value:
    normalised, _mean, _inv_std = op.LayerNormalization(t, weight, axis=-1, epsilon=LAYER_NORM_EPS)
    return normalised


# ---- LSTM ------------------------------------------------------------------------------


def _lstm_forward(
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_ci, w_cf, w_co, ln_ih, ln_hh, ln_c_weight,
    ln_c_bias, zoneout_h, zoneout_c, recurrent_mask, lengths, forget_gate, return_states, save,
):  # fmt: skip
    """cellstate::lstm_forward (kernels/cpu/ops.py): output (T, B, P), h_n, c_n, then empty
    tensors for the records and what backward would read (with save; an ONNX model never runs
    backward, and nothing reads them)."""
    if return_states:
        raise NotImplementedError(
            "ONNX export of cellstate.LSTM with return_states=True is not supported; export "
            "with return_states=False"
        )
    for name, z in (("zoneout", zoneout_h), ("zoneout", zoneout_c)):
        if z is not None and z.shape.rank() != 0:
            raise NotImplementedError(
                f"ONNX export of cellstate.LSTM with {name} in training mode (random masks) is "
                "not supported; export the model in eval mode (model.eval())"
            )
    if recurrent_mask is not None:
        raise NotImplementedError(
            "ONNX export of cellstate.LSTM with recurrent_dropout in training mode is not "
            "supported; export the model in eval mode (model.eval())"
        )
    onnx_lstm_fits = (
        x.dtype == ir.DataType.FLOAT
        and forget_gate
        and w_hr is None
        and ln_ih is None
        and zoneout_h is None
        and zoneout_c is None
    )
    if onnx_lstm_fits:
        output, h_n, c_n = _onnx_lstm(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_ci, w_cf, w_co, lengths)
    else:
        output, h_n, c_n = _scan_lstm(
            x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_ci, w_cf, w_co, ln_ih, ln_hh,
            ln_c_weight, ln_c_bias, zoneout_h, zoneout_c, lengths, forget_gate,
        )  # fmt: skip
    empty = _empty(x)
    return output, h_n, c_n, empty, empty, empty, empty, empty, empty


def _onnx_lstm(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_ci, w_cf, w_co, lengths):
    """ONNX's LSTM operator, one forward direction."""
    inputs = _recurrent_op_inputs(x, w_ih, w_hh, b_ih, b_hh, lengths, _onnx_gate_order)
    peepholes = None
    if w_ci is not None:
        peepholes = op.Unsqueeze(op.Concat(w_ci, w_co, w_cf, axis=0), [0])  # (1, 3H): i, o, f
    hidden_size = w_hh.shape[1]
    y, y_h, y_c = op.LSTM(
        *inputs, op.Unsqueeze(h0, [0]), op.Unsqueeze(c0, [0]), peepholes, hidden_size=hidden_size
    )
    return op.Squeeze(y, [1]), op.Squeeze(y_h, [0]), op.Squeeze(y_c, [0])  # Y: (T, 1, B, H)


def _scan_lstm(
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_ci, w_cf, w_co, ln_ih, ln_hh, ln_c_weight,
    ln_c_bias, zoneout_h, zoneout_c, lengths, forget_gate,
):  # fmt: skip
    """The reference's LSTM step in a Scan body; W_ih x for every step before it."""
    xw = op.MatMul(x, op.Transpose(w_ih, perm=[1, 0]))  # (T, B, G)
    if ln_ih is not None:
        xw = _outer_layer_norm(xw, ln_ih)
    if b_ih is not None:
        xw = op.Add(xw, b_ih)
    w_hh_t = op.Transpose(w_hh, perm=[1, 0])  # (P, G)
    w_hr_t = None if w_hr is None else op.Transpose(w_hr, perm=[1, 0])  # (H, P)
    gates = 4 if forget_gate else 3

    def cell(step, states, slices):
        h, c = states
        (xw_t,) = slices  # (B, G)
        hw = step("MatMul", h, w_hh_t)
        if ln_hh is not None:
            hw = _layer_norm(step, hw, ln_hh)
        if b_hh is not None:
            hw = step("Add", hw, b_hh)
        a = step("Add", xw_t, hw)
        blocks = step.tape.op_multi_out(
            "Split", [a], {"axis": 1, "num_outputs": gates}, num_outputs=gates
        )
        a_i, a_f, a_g, a_o = blocks if forget_gate else (blocks[0], None, *blocks[1:])
        if w_ci is not None:
            a_i = step("Add", a_i, step("Mul", w_ci, c))
            if forget_gate:
                a_f = step("Add", a_f, step("Mul", w_cf, c))
        i = step("Sigmoid", a_i)
        g = step("Tanh", a_g)
        carry = c if a_f is None else step("Mul", step("Sigmoid", a_f), c)
        c_new = step("Add", carry, step("Mul", i, g))
        if w_co is not None:
            a_o = step("Add", a_o, step("Mul", w_co, c_new))
        o = step("Sigmoid", a_o)
        c_shown = c_new
        if ln_c_weight is not None:
            c_shown = _layer_norm(step, c_new, ln_c_weight, ln_c_bias)
        h_new = step("Mul", o, step("Tanh", c_shown))
        if w_hr_t is not None:
            h_new = step("MatMul", h_new, w_hr_t)
        c_new = _zoneout(step, zoneout_c, c, c_new)
        h_new = _zoneout(step, zoneout_h, h, h_new)
        return [h_new, c_new], h_new

    output, (h_n, c_n) = _scan(cell, [h0, c0], [xw], lengths, x)
    return output, h_n, c_n


def _zoneout(step, z: Value | None, previous: Value, new: Value) -> Value:
    """Evaluation-mode zoneout, the expectation: z * previous + (1 - z) * new."""
    if z is None:
        return new
    return step("Add", new, step("Mul", z, step("Sub", previous, new)))


# ---- RNN -------------------------------------------------------------------------------


def _rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, relu):
    """cellstate::rnn_forward (kernels/cpu/ops.py): output (T, B, H), h_n (B, H)."""
    activation = "Relu" if relu else "Tanh"
    if x.dtype == ir.DataType.FLOAT:
        inputs = _recurrent_op_inputs(x, w_ih, w_hh, b_ih, b_hh, lengths, lambda t: t)
        y, y_h = op.RNN(
            *inputs, op.Unsqueeze(h0, [0]), activations=[activation], hidden_size=w_hh.shape[0]
        )
        return op.Squeeze(y, [1]), op.Squeeze(y_h, [0])
    xw = op.MatMul(x, op.Transpose(w_ih, perm=[1, 0]))  # (T, B, H)
    if b_ih is not None:
        xw = op.Add(xw, b_ih)
    w_hh_t = op.Transpose(w_hh, perm=[1, 0])

    def cell(step, states, slices):
        (h,), (xw_t,) = states, slices
        a = step("Add", xw_t, step("MatMul", h, w_hh_t))
        if b_hh is not None:
            a = step("Add", a, b_hh)
        h_new = step(activation, a)
        return [h_new], h_new

    output, (h_n,) = _scan(cell, [h0], [xw], lengths, x)
    return output, h_n
