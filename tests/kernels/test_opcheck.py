"""torch.library.opcheck of every custom op (the CPU kernel's lstm/rnn forward and backward, the
Triton ops under TRITON_INTERPRET=1) for every variant: the schema, the fake implementation
against the real one (shapes, dtypes, strides), the autograd registration, and for one input
with every variant on the AOT dispatch with dynamic shapes. And: the C++ entry points take
their arguments in the order of the ops' descriptions (kernels/description.py).

The arguments are built by name from each op's description (an argument a variant does not use
stays None), so a new variant field reaches these tests as an absent argument until a variant
below sets it. Shapes are tiny: T=3, B=2."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported (as test_triton.py)

import pytest  # noqa: E402
import torch  # noqa: E402

from cellstate.kernels.cpu import build, ops  # noqa: E402
from cellstate.kernels.description import OpDescription  # noqa: E402

T, B, D, H, P = 3, 2, 3, 2, 1
FAST = ("test_schema", "test_faketensor", "test_autograd_registration")
LSTM_VARIANTS = (
    "plain", "no_bias", "proj_size", "peephole", "layer_norm", "zoneout", "zoneout_eval",
    "recurrent_mask", "lengths", "no_forget_gate", "return_states", "float64",
)  # fmt: skip
# (lengths are left out of the AOT check, which compares every output of two runs: the CPU
# kernel leaves the saved rows past a sequence's end (cells, c_states, ln_stats) unwritten, as
# its backward never reads them; the faketensor checks above cover lengths)
EVERYTHING = ("proj_size", "peephole", "layer_norm", "zoneout", "recurrent_mask")
RNN_VARIANTS = ("plain", "no_bias", "relu", "lengths", "float64")


def _leaf(*shape, dtype, grad=True):
    return torch.randn(*shape, dtype=dtype).requires_grad_(grad)


def _args(op: OpDescription, values: dict) -> tuple:
    """The op's arguments in its order, None where values has none."""
    return tuple(values.get(name) for name in op.input_names)


def _lstm_values(variants, gate_input: bool = False) -> dict:
    """The named arguments of an LSTM op with the given variants on; with gate_input the
    Triton op's (xa instead of x and the input side)."""
    torch.manual_seed(0)
    dtype = torch.float64 if "float64" in variants else torch.float32
    G = (3 if "no_forget_gate" in variants else 4) * H
    Q = P if "proj_size" in variants else H  # the output size

    def leaf(*shape):
        return _leaf(*shape, dtype=dtype)

    v = dict(
        h0=leaf(B, Q), c0=leaf(B, H), w_hh=leaf(G, Q), forget_gate="no_forget_gate" not in variants
    )
    if gate_input:
        v["xa"] = leaf(T, B, G)
    else:
        v.update(x=leaf(T, B, D), w_ih=leaf(G, D), return_states="return_states" in variants)
        v["save"] = True
        if "no_bias" not in variants:
            v.update(b_ih=leaf(G), b_hh=leaf(G))
        if "layer_norm" in variants:
            v["ln_ih"] = leaf(G)
    if "proj_size" in variants:
        v["w_hr"] = leaf(Q, H)
    if "peephole" in variants:
        v.update(w_ci=leaf(H), w_cf=leaf(H), w_co=leaf(H))
    if "layer_norm" in variants:
        v.update(ln_hh=leaf(G), ln_c_weight=leaf(H), ln_c_bias=leaf(H))
    if "zoneout" in variants:
        v["zoneout_h"] = (torch.rand(T, B, Q) < 0.3).to(dtype)
        v["zoneout_c"] = (torch.rand(T, B, H) < 0.5).to(dtype)
    if "zoneout_eval" in variants:
        v.update(zoneout_h=torch.tensor(0.3, dtype=dtype), zoneout_c=torch.tensor(0.5, dtype=dtype))
    if "recurrent_mask" in variants:
        v["recurrent_mask"] = (torch.rand(B, Q) < 0.7).to(dtype) / 0.7
    if "lengths" in variants:
        v["lengths"] = torch.tensor([T, 2])
    return v


def _rnn_values(variants) -> dict:
    torch.manual_seed(0)
    dtype = torch.float64 if "float64" in variants else torch.float32
    v = dict(x=_leaf(T, B, D, dtype=dtype), h0=_leaf(B, H, dtype=dtype), relu="relu" in variants)
    v.update(w_ih=_leaf(H, D, dtype=dtype), w_hh=_leaf(H, H, dtype=dtype))
    if "no_bias" not in variants:
        v.update(b_ih=_leaf(H, dtype=dtype), b_hh=_leaf(H, dtype=dtype))
    if "lengths" in variants:
        v["lengths"] = torch.tensor([T, 2])
    return v


def _backward_args(op: OpDescription, forward, values: dict, **flags) -> tuple:
    """The backward op's arguments after a real forward run: random output gradients (None for
    an absent output), the saved inputs and outputs, the flags; nothing requires grad."""
    values = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in values.items()}
    outputs = dict(zip(op.output_names, forward(*_args(op, values)), strict=True))
    for name in op.grad_outputs:
        out = outputs[name]
        values[f"d_{name}"] = torch.randn_like(out) if out.numel() else None
    values.update(outputs, **flags)
    return tuple(values.get(name) for name in op.backward_names)


def test_the_cpp_entry_points_take_the_described_arguments_in_order():
    """entry_points.h lists each entry point's arguments once; they must be the ops' schemas."""
    assert build.load().argument_lists() == {
        "lstm_forward": ops.LSTM.forward_args(),
        "lstm_backward": ops.LSTM.backward_args(),
        "rnn_forward": ops.RNN.forward_args(),
        "rnn_backward": ops.RNN.backward_args(),
    }


def test_a_wrong_call_of_an_entry_point_names_the_argument():
    args = list(_args(ops.LSTM, _lstm_values(())))
    kernel = build.load()
    with pytest.raises(TypeError, match="lstm_forward takes 22 arguments, got 21"):
        kernel.lstm_forward(*args[:-1])
    args[ops.LSTM.input_names.index("w_hh")] = None
    with pytest.raises(
        TypeError, match="lstm_forward's argument w_hh must be Tensor, got NoneType"
    ):
        kernel.lstm_forward(*args)


@pytest.mark.parametrize(
    "layer, variant", [("lstm", v) for v in LSTM_VARIANTS] + [("rnn", v) for v in RNN_VARIANTS]
)
def test_cpu_ops(layer, variant):
    op = ops.LSTM if layer == "lstm" else ops.RNN
    forward = ops.lstm_forward if layer == "lstm" else ops.rnn_forward
    backward = ops.lstm_backward if layer == "lstm" else ops.rnn_backward
    values = (_lstm_values if layer == "lstm" else _rnn_values)((variant,))
    torch.library.opcheck(forward, _args(op, values), test_utils=FAST)
    backward_args = _backward_args(op, forward, values, need_dx=variant != "plain")
    torch.library.opcheck(backward, backward_args, test_utils=FAST[:2])


def test_cpu_ops_aot_dispatch_with_every_variant():
    """Autograd through the ops as torch.compile traces them (the backward op's fake included)."""
    lstm = _lstm_values((*EVERYTHING, "return_states"))
    torch.library.opcheck(
        ops.lstm_forward, _args(ops.LSTM, lstm), test_utils="test_aot_dispatch_dynamic"
    )
    rnn = _rnn_values(("relu", "lengths"))
    torch.library.opcheck(
        ops.rnn_forward, _args(ops.RNN, rnn), test_utils="test_aot_dispatch_dynamic"
    )


def _triton():
    pytest.importorskip("triton", reason="triton is not installed: the Triton backend is untested")
    if os.environ["TRITON_INTERPRET"] != "1":
        pytest.skip("TRITON_INTERPRET is set to something else than 1")
    from cellstate.kernels.triton import layout, lstm_ops, rnn_ops

    return layout, lstm_ops, rnn_ops


@pytest.mark.parametrize("variant", [v for v in LSTM_VARIANTS if v != "return_states"])
def test_triton_lstm_ops(variant):
    """(return_states is no argument of the Triton op: the backend reads the states from its
    gates and cells.)"""
    layout, lstm_ops, _ = _triton()
    values = _lstm_values((variant,), gate_input=True)
    forward = torch.ops.cellstate.triton_lstm_forward.default
    torch.library.opcheck(forward, _args(layout.LSTM, values), test_utils=FAST)
    backward = _backward_args(layout.LSTM, forward, values)
    torch.library.opcheck(
        torch.ops.cellstate.triton_lstm_backward.default, backward, test_utils=FAST[:2]
    )


@pytest.mark.parametrize("variant", RNN_VARIANTS)
def test_triton_rnn_ops(variant):
    _, _, rnn_ops = _triton()
    values = _rnn_values((variant,))
    values["xa"] = (values["x"] @ values["w_ih"].t()).detach().requires_grad_()  # (T, B, H)
    torch.library.opcheck(rnn_ops.rnn_forward, _args(rnn_ops.RNN, values), test_utils=FAST)
    backward = _backward_args(rnn_ops.RNN, rnn_ops.rnn_forward, values)
    torch.library.opcheck(rnn_ops.rnn_backward, backward, test_utils=FAST[:2])


def test_triton_lstm_aot_dispatch_with_every_variant():
    layout, _, _ = _triton()
    values = _lstm_values(EVERYTHING, gate_input=True)
    torch.library.opcheck(
        torch.ops.cellstate.triton_lstm_forward.default,
        _args(layout.LSTM, values),
        test_utils="test_aot_dispatch_dynamic",
    )
