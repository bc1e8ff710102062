"""The LSTM variants: the reference backend against an independent step-by-step implementation
(tests/layers/naive_lstm.py), gradcheck in float64, and what the layer feeds the kernel."""

import itertools

import pytest
import torch

import cellstate
from cellstate.kernels import reference
from cellstate.kernels.params import LSTMLayerParams, StepNoise
from tests.differential import assert_close_labelled, run_with_grads, tolerance
from tests.layers.naive_lstm import naive_lstm_layer

T, B, D, H, P = 5, 3, 2, 4, 3
VARIANTS = list(
    itertools.product(
        (True, False),  # forget_gate
        (False, True),  # peephole
        (False, True),  # layer_norm
        (False, True),  # projection
    )
)
NOISE = ("none", "zoneout-train", "zoneout-eval", "recurrent-dropout")


def make_params(forget_gate, peephole, layer_norm, projection, dtype=torch.float64):
    G = (4 if forget_gate else 3) * H
    out = P if projection else H

    def r(*shape):
        return torch.randn(shape, dtype=dtype) * 0.5

    return LSTMLayerParams(
        w_ih=r(G, D),
        w_hh=r(G, out),
        b_ih=r(G),
        b_hh=r(G),
        w_hr=r(P, H) if projection else None,
        w_ci=r(H) if peephole else None,
        w_cf=r(H) if peephole and forget_gate else None,
        w_co=r(H) if peephole else None,
        ln_ih=1 + r(G) if layer_norm else None,
        ln_hh=1 + r(G) if layer_norm else None,
        ln_c_weight=1 + r(H) if layer_norm else None,
        ln_c_bias=r(H) if layer_norm else None,
        forget_gate=forget_gate,
    )


def make_noise(kind, out, dtype=torch.float64):
    if kind == "zoneout-train":
        return StepNoise(
            torch.bernoulli(torch.full((T, B, out), 0.3, dtype=dtype)),
            torch.bernoulli(torch.full((T, B, H), 0.5, dtype=dtype)),
        )
    if kind == "zoneout-eval":
        return StepNoise(torch.tensor(0.3, dtype=dtype), torch.tensor(0.5, dtype=dtype))
    if kind == "recurrent-dropout":
        return StepNoise(recurrent_mask=torch.bernoulli(torch.full((B, out), 0.6)).to(dtype) / 0.6)
    return StepNoise()


FIELDS = ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "w_ci", "w_cf", "w_co")
FIELDS += ("ln_ih", "ln_hh", "ln_c_weight", "ln_c_bias")


def as_function(kernel, p, noise, lengths):
    """kernel as a function of (x, h0, c0, *present parameters), for gradients and gradcheck."""
    present = [f for f in FIELDS if getattr(p, f) is not None]

    def fn(x, h0, c0, *tensors):
        q = LSTMLayerParams(**dict(zip(present, tensors, strict=True)), forget_gate=p.forget_gate)
        return kernel(x, h0, c0, q, noise, lengths)[:3]

    return fn, [getattr(p, f) for f in present]


def layer_inputs(p, dtype=torch.float64):
    out = p.w_hh.shape[1]
    x = torch.randn(T, B, D, dtype=dtype)
    return x, torch.randn(B, out, dtype=dtype), torch.randn(B, H, dtype=dtype)


@pytest.mark.parametrize("noise_kind", NOISE)
@pytest.mark.parametrize("variant", VARIANTS, ids=str)
@pytest.mark.parametrize("lengths", (None, torch.tensor([5, 2, 4])), ids=("full", "lengths"))
def test_reference_equals_naive_step_by_step(variant, noise_kind, lengths):
    p = make_params(*variant)
    noise = make_noise(noise_kind, p.w_hh.shape[1])
    x, h0, c0 = layer_inputs(p)
    ours, params = as_function(reference.lstm_layer, p, noise, lengths)
    naive, _ = as_function(naive_lstm_layer, p, noise, lengths)
    out_a, grads_a = run_with_grads(ours, [x, h0, c0, *params])
    out_b, grads_b = run_with_grads(naive, [x, h0, c0, *params])
    assert_close_labelled(out_a, out_b, "forward", **tolerance(torch.float64))
    assert_close_labelled(grads_a, grads_b, "backward", **tolerance(torch.float64))


# Every variant once, the noise kinds taking turns: gradcheck costs one forward per input element.
@pytest.mark.parametrize(
    "variant, noise_kind", [(v, NOISE[k % len(NOISE)]) for k, v in enumerate(VARIANTS)], ids=str
)
def test_reference_gradcheck(variant, noise_kind):
    p = make_params(*variant)
    noise = make_noise(noise_kind, p.w_hh.shape[1])
    fn, params = as_function(reference.lstm_layer, p, noise, torch.tensor([5, 2, 4]))
    args = [a.detach().requires_grad_() for a in (*layer_inputs(p), *params)]
    assert torch.autograd.gradcheck(fn, args)


@pytest.mark.parametrize("reverse", (False, True))
def test_reference_rnn_gradcheck(reverse):
    from cellstate.kernels.params import RNNLayerParams

    w = [torch.randn(s, dtype=torch.float64, requires_grad=True) for s in ((H, D), (H, H), (H,))]
    x = torch.randn(T, B, D, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, H, dtype=torch.float64, requires_grad=True)

    def fn(x, h0, w_ih, w_hh, b):
        p = RNNLayerParams(w_ih, w_hh, b, b, "tanh")
        return reference.rnn_layer(x, h0, p, torch.tensor([5, 2, 4]), reverse=reverse)[:2]

    assert torch.autograd.gradcheck(fn, (x, h0, *w))


def test_reference_rnn_refuses_an_unknown_nonlinearity():
    """Not silently relu: the reference names the argument and what it accepts."""
    from cellstate.kernels.params import RNNLayerParams

    p = RNNLayerParams(torch.randn(H, D), torch.randn(H, H), nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'; got 'sigmoid'"):
        reference.rnn_layer(torch.randn(T, B, D), torch.zeros(B, H), p)


VARIANT_KWARGS = {
    "peephole": {"peephole": True},
    "layer_norm": {"layer_norm": True},
    "no forget gate": {"forget_gate": False},
    "zoneout": {"zoneout": (0.2, 0.4)},
    "recurrent_dropout": {"recurrent_dropout": 0.3},
    "all": {"peephole": True, "layer_norm": True, "zoneout": 0.1, "recurrent_dropout": 0.2},
    "all, 1997 cell, projection": {
        "peephole": True,
        "layer_norm": True,
        "forget_gate": False,
        "proj_size": 2,
    },
}


@pytest.mark.parametrize("name", sorted(VARIANT_KWARGS))
def test_layer_with_variants_equals_naive(name):
    """Eval mode: the whole module (2 layers, bidirectional) against the naive cell."""
    torch.manual_seed(1)
    kwargs = VARIANT_KWARGS[name]
    lstm = cellstate.LSTM(D, H, 2, bidirectional=True, dtype=torch.float64, **kwargs).eval()
    x = torch.randn(T, B, D, dtype=torch.float64)
    output, (h_n, c_n) = lstm(x)
    layer_input, outs = x, []
    for layer in range(2):
        outs = []
        for direction in range(2):
            z_h, z_c = lstm.zoneout
            noise = StepNoise(
                torch.tensor(z_h, dtype=x.dtype) if z_h else None,
                torch.tensor(z_c, dtype=x.dtype) if z_c else None,
            )
            xi = layer_input.flip(0) if direction else layer_input
            P_out = lstm.proj_size or H
            zeros_h, zeros_c = x.new_zeros(B, P_out), x.new_zeros(B, H)
            out, h, c = naive_lstm_layer(
                xi, zeros_h, zeros_c, lstm._layer_params(layer, direction), noise
            )
            outs.append(out.flip(0) if direction else out)
            k = 2 * layer + direction
            torch.testing.assert_close(h_n[k], h, **tolerance(torch.float64))
            torch.testing.assert_close(c_n[k], c, **tolerance(torch.float64))
        layer_input = torch.cat(outs, -1)
    torch.testing.assert_close(output, layer_input, **tolerance(torch.float64))


@pytest.mark.parametrize("name", sorted(VARIANT_KWARGS))
def test_layer_gradcheck_with_variants(name):
    """gradcheck through the module in training mode (fixed noise: same seed each call)."""
    lstm = cellstate.LSTM(2, 3, 2, dtype=torch.float64, **VARIANT_KWARGS[name])
    names = [n for n, _ in lstm.named_parameters()]
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)

    def fn(x, *params):
        torch.manual_seed(5)  # the same zoneout/dropout masks on every evaluation
        out, (h, c) = torch.func.functional_call(lstm, dict(zip(names, params, strict=True)), (x,))
        return out, h, c

    params = [p.detach().clone().requires_grad_() for p in lstm.parameters()]
    assert torch.autograd.gradcheck(fn, (x, *params))


def capture_noise(monkeypatch):
    seen = []
    original = reference.lstm_layer

    def spy(x, h0, c0, p, noise=None, *args, **kwargs):
        seen.append(noise)
        return original(x, h0, c0, p, noise, *args, **kwargs)

    monkeypatch.setattr(reference, "lstm_layer", spy)
    return seen


def test_zoneout_masks_in_training_and_expectation_in_eval(monkeypatch):
    seen = capture_noise(monkeypatch)
    lstm = cellstate.LSTM(2, 64, zoneout=(0.25, 0.5), backend="reference")
    x = torch.randn(200, 8, 2)
    lstm(x)
    zh, zc = seen[-1].zoneout_h, seen[-1].zoneout_c
    assert zh.shape == (200, 8, 64) and zc.shape == (200, 8, 64)
    assert set(zh.unique().tolist()) == {0.0, 1.0}
    assert abs(zh.mean().item() - 0.25) < 0.02 and abs(zc.mean().item() - 0.5) < 0.02
    lstm.eval()
    lstm(x)
    assert seen[-1].zoneout_h.dim() == 0 and seen[-1].zoneout_h.item() == 0.25
    assert seen[-1].recurrent_mask is None


def test_recurrent_dropout_is_one_mask_per_sequence_and_off_in_eval(monkeypatch):
    seen = capture_noise(monkeypatch)
    lstm = cellstate.LSTM(2, 64, recurrent_dropout=0.4, backend="reference")
    x = torch.randn(10, 8, 2)
    lstm(x)
    mask = seen[-1].recurrent_mask
    assert mask.shape == (8, 64)  # (B, P): the same at every step
    assert mask.unique().tolist() == [0.0, pytest.approx(1 / 0.6)]
    torch.manual_seed(3)
    a = lstm(x)[0]
    torch.manual_seed(3)
    assert torch.equal(a, lstm(x)[0])
    assert not torch.equal(a, lstm(x)[0])
    lstm.eval()
    lstm(x)
    assert seen[-1].recurrent_mask is None
    assert torch.equal(lstm(x)[0], lstm(x)[0])


def test_variant_parameter_names_and_shapes():
    lstm = cellstate.LSTM(3, 5, 2, bidirectional=True, peephole=True, layer_norm=True)
    shapes = {n: tuple(p.shape) for n, p in lstm.named_parameters()}
    for sfx in ("_l0", "_l1_reverse"):
        for gate in "ifo":
            assert shapes[f"weight_c{gate}{sfx}"] == (5,)
        assert shapes[f"layer_norm_ih{sfx}"] == (20,) and shapes[f"layer_norm_hh{sfx}"] == (20,)
        assert shapes[f"layer_norm_c_weight{sfx}"] == (5,)
        assert shapes[f"layer_norm_c_bias{sfx}"] == (5,)
    old = cellstate.LSTM(3, 5, forget_gate=False, peephole=True)
    assert old.weight_ih_l0.shape == (15, 3) and not hasattr(old, "weight_cf_l0")
