"""The kernel functions directly (cellstate.kernels.cpu.ops against kernels.reference), and
torch.autograd.gradcheck of the custom ops for every variant."""

import pytest
import torch

from cellstate.kernels import reference
from cellstate.kernels.cpu import ops
from cellstate.kernels.params import LSTMLayerParams, RNNLayerParams, StepNoise
from tests.differential import FLOAT64_KERNEL, assert_close_labelled, flatten, run_with_grads

T, B, D, H, P = 5, 3, 2, 4, 3
F64 = torch.float64


def _lstm_params(variant: set[str]) -> LSTMLayerParams:
    G = (3 if "no_forget_gate" in variant else 4) * H
    out = P if "proj" in variant else H

    def r(*shape):
        return torch.randn(*shape, dtype=F64) * 0.5

    peep = "peephole" in variant
    ln = "layer_norm" in variant
    return LSTMLayerParams(
        w_ih=r(G, D),
        w_hh=r(G, out),
        b_ih=r(G),
        b_hh=r(G),
        w_hr=r(P, H) if "proj" in variant else None,
        w_ci=r(H) if peep else None,
        w_cf=r(H) if peep and "no_forget_gate" not in variant else None,
        w_co=r(H) if peep else None,
        ln_ih=1 + r(G) if ln else None,
        ln_hh=1 + r(G) if ln else None,
        ln_c_weight=1 + r(H) if ln else None,
        ln_c_bias=r(H) if ln else None,
        forget_gate="no_forget_gate" not in variant,
    )


def _noise(variant: set[str], out: int) -> StepNoise:
    if "zoneout_eval" in variant:
        return StepNoise(torch.tensor(0.3, dtype=F64), torch.tensor(0.6, dtype=F64))
    if "zoneout" in variant or "dropout" in variant:
        zh = (
            torch.bernoulli(torch.full((T, B, out), 0.3, dtype=F64))
            if "zoneout" in variant
            else None
        )
        zc = (
            torch.bernoulli(torch.full((T, B, H), 0.5, dtype=F64)) if "zoneout" in variant else None
        )
        mask = (
            torch.bernoulli(torch.full((B, out), 0.6, dtype=F64)) / 0.6
            if "dropout" in variant
            else None
        )
        return StepNoise(zh, zc, mask)
    return StepNoise()


VARIANTS = [
    set(),
    {"proj"},
    {"peephole"},
    {"layer_norm"},
    {"no_forget_gate"},
    {"zoneout"},
    {"zoneout_eval"},
    {"dropout"},
    {"proj", "peephole", "layer_norm", "no_forget_gate", "zoneout", "dropout"},
]
IDS = ["+".join(sorted(v)) or "plain" for v in VARIANTS]
LENGTHS = torch.tensor([5, 2, 4])


def _lstm_args(variant):
    p = _lstm_params(variant)
    out = p.w_hh.shape[1]
    x, h0, c0 = (
        torch.randn(T, B, D, dtype=F64),
        torch.randn(B, out, dtype=F64),
        torch.randn(B, H, dtype=F64),
    )
    return x, h0, c0, p, _noise(variant, out)


PARAM_NAMES = [
    "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "w_ci", "w_cf", "w_co",
    "ln_ih", "ln_hh", "ln_c_weight", "ln_c_bias",
]  # fmt: skip


def _as_function(kernel, p: LSTMLayerParams, noise, lengths, reverse, return_states):
    """kernel.lstm_layer as a function of (x, h0, c0, *the parameters present)."""
    present = [n for n in PARAM_NAMES if getattr(p, n) is not None]

    def fn(x, h0, c0, *values):
        params = LSTMLayerParams(
            **dict(zip(present, values, strict=True)), forget_gate=p.forget_gate
        )
        return kernel.lstm_layer(x, h0, c0, params, noise, lengths, reverse, return_states)

    return fn, [getattr(p, n) for n in present]


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["padded", "lengths"])
@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_lstm_layer_matches_reference(variant, lengths, reverse):
    x, h0, c0, p, noise = _lstm_args(variant)
    results = []
    for kernel in (ops, reference):
        fn, values = _as_function(kernel, p, noise, lengths, reverse, True)
        results.append(
            run_with_grads(lambda *a, fn=fn: _drop_constant_f(fn(*a), p), [x, h0, c0, *values])
        )
    (out_a, grad_a), (out_b, grad_b) = results
    assert_close_labelled(out_a, out_b, "forward", **FLOAT64_KERNEL)
    assert_close_labelled(grad_a, grad_b, "backward", **FLOAT64_KERNEL)


def _drop_constant_f(result, p):
    """Without a forget gate the recorded f is the constant 1: nothing to differentiate."""
    output, h, c, states = result
    return output, h, c, tuple(v for k, v in states.items() if p.forget_gate or k != "f")


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_lstm_gradcheck(variant):
    x, h0, c0, p, noise = _lstm_args(variant)
    fn, values = _as_function(ops, p, noise, LENGTHS, True, True)

    def flat(*args):
        return tuple(t for _, t in flatten(_drop_constant_f(fn(*args), p)))

    inputs = [t.clone().requires_grad_() for t in (x, h0, c0, *values)]
    assert torch.autograd.gradcheck(flat, inputs)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["padded", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_rnn_layer_matches_reference_and_gradchecks(nonlinearity, lengths, reverse):
    def r(*shape):
        return torch.randn(*shape, dtype=F64)

    x, h0 = r(T, B, D), r(B, H)
    weights = [r(H, D), r(H, H) * 0.5, r(H), r(H)]

    def fn(kernel):
        def run(x, h0, w_ih, w_hh, b_ih, b_hh):
            p = RNNLayerParams(w_ih, w_hh, b_ih, b_hh, nonlinearity)
            output, h, states = kernel.rnn_layer(x, h0, p, lengths, reverse, True)
            return output, h, states["h"]

        return run

    out_a, grad_a = run_with_grads(fn(ops), [x, h0, *weights])
    out_b, grad_b = run_with_grads(fn(reference), [x, h0, *weights])
    assert_close_labelled(out_a, out_b, "forward", **FLOAT64_KERNEL)
    assert_close_labelled(grad_a, grad_b, "backward", **FLOAT64_KERNEL)
    inputs = [t.clone().requires_grad_() for t in (x, h0, *weights)]
    assert torch.autograd.gradcheck(lambda *a: fn(ops)(*a)[:2], inputs)


def test_only_some_outputs_used():
    """Gradients flow when only h_n, or only c_n, is used (the other gradients are None)."""
    x, h0, c0, p, noise = _lstm_args(set())
    for pick in (1, 2):
        leaves = [t.clone().requires_grad_() for t in (x, h0, c0)]
        results = [k.lstm_layer(*leaves, p, noise)[pick].sum() for k in (ops, reference)]
        grads = [torch.autograd.grad(r, leaves) for r in results]
        for a, b in zip(*grads, strict=True):
            torch.testing.assert_close(a, b, **FLOAT64_KERNEL)


def test_inference_saves_nothing():
    """Under no_grad the forward keeps no activations for backward."""
    x, h0, c0, p, _ = _lstm_args({"layer_norm", "zoneout"})
    with torch.no_grad():
        results = ops.lstm_forward(
            x, h0, c0, p.w_ih, p.w_hh, p.b_ih, p.b_hh, p.w_hr, p.w_ci, p.w_cf, p.w_co, p.ln_ih,
            p.ln_hh, p.ln_c_weight, p.ln_c_bias, None, None, None, None, True, False, False,
        )  # fmt: skip
    assert all(t.numel() == 0 for t in results[3:])


@pytest.mark.parametrize("bad", ["cuda", "complex64"])
def test_unsupported_input_raises_not_implemented(bad):
    x, h0, c0, p, _ = _lstm_args(set())
    if bad == "complex64":
        x = x.to(torch.complex64)
        reason = ops.unsupported(x)
    else:
        reason = ops.unsupported(torch.empty(0, device="meta"))
    assert reason and ("float32" in reason or "CPU" in reason)
    if bad == "complex64":
        with pytest.raises(NotImplementedError, match="float32"):
            ops.lstm_layer(x, h0, c0, p)
