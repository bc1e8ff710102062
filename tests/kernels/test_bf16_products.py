"""bfloat16 on the CPU kernel with bfloat16 products: the LSTM's matrix products on bfloat16
operands with float32 accumulation (per-step products on packed weights, the backward's
whole-sequence products), everything else in float32, as torch.nn.LSTM's bfloat16 (oneDNN) does.

Shapes are large enough that the kernel packs its weights (tiny products stay in float32), and
each test checks through the kernel's counters that the bfloat16 products ran (where this CPU
runs them: elsewhere, that they did not, the same values being multiplied in float32). Results are
compared with the float32 reference on the same bfloat16 values and with torch.nn.LSTM in
bfloat16, within the bfloat16 tolerance of tests/differential.py scaled to each tensor's size.
"""

import copy

import pytest
import torch

import cellstate
from cellstate.kernels.cpu import build
from cellstate.kernels.cpu import ops as cpu
from cellstate.kernels.params import LSTMLayerParams
from tests.differential import scaled_tolerance
from tests.kernels.test_cpu_modules import LSTM_VARIANTS as CPU_MODULE_VARIANTS
from tests.kernels.test_half_precision import _results as half_precision_results

BF16 = torch.bfloat16
T, B, D, H = 5, 8, 24, 48
LENGTHS = (5, 2, 4, 5, 1, 3, 5, 4)
VARIANTS = {
    **{name: kwargs for name, kwargs in CPU_MODULE_VARIANTS.items() if "proj_size" not in kwargs},
    "proj": {"proj_size": 24},
    "everything": {**CPU_MODULE_VARIANTS["everything"], "proj_size": 24},
    "stacked": {"num_layers": 2, "bidirectional": True, "proj_size": 24},
}


def _counts() -> tuple[int, int, int]:
    """(weights packed for bfloat16 per-step products, whole-sequence bfloat16 products,
    backward calls that rounded d a to bfloat16 once for all their products)."""
    packed, gemms, rounded_once = build.load().bf16_product_counts()
    return packed, gemms, rounded_once


def _assert_ran(before: tuple[int, int, int], whole_sequence: bool = True):
    """The per-step (and whole-sequence) bfloat16 products ran since before, where this CPU and
    torch build support them; where not, that none did."""
    after = _counts()
    per_step_support, gemm_support = build.load().bf16_product_support()
    assert (after[0] > before[0]) == per_step_support, "bfloat16 per-step products"
    if whole_sequence:
        assert (after[1] > before[1]) == gemm_support, "bfloat16 whole-sequence products"


def _results(module, x, packed: bool):
    """Labelled outputs and gradients (test_half_precision's), packed to LENGTHS."""
    return half_precision_results(module, x, packed, lengths=LENGTHS)


def _assert_close(ours, expected):
    for (name, a), (_, b) in zip(ours, expected, strict=True):
        assert a.dtype == (torch.int64 if b.dtype == torch.int64 else BF16), name
        tol = scaled_tolerance(BF16, b.float())
        torch.testing.assert_close(a.float(), b.float(), **tol, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("packed", [False, True], ids=["tensor", "packed"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bf16_products_match_float32_reference(variant, packed):
    """Against the float32 reference on the same values (the same zoneout and recurrent-dropout
    units dropped: the masks are drawn at float32 probabilities from one seed)."""
    torch.manual_seed(0)
    module = cellstate.LSTM(D, H, backend="cpu", **VARIANTS[variant]).to(BF16)
    x = torch.randn(T, B, D).to(BF16)
    reference = copy.deepcopy(module).float()
    reference.backend = "reference"
    before = _counts()
    ours = _results(module, x, packed)
    _assert_ran(before)
    # The backward rounds d a once (lstm_backward.h) unless a layer norm or a dropout mask
    # stands between d a and the products.
    kwargs = VARIANTS[variant]
    rounds_once = not kwargs.get("layer_norm") and not kwargs.get("recurrent_dropout")
    gemm_support = build.load().bf16_product_support()[1]
    assert (_counts()[2] > before[2]) == (rounds_once and gemm_support), "d a rounded once"
    _assert_close(ours, _results(reference, x.float(), packed))


def test_bf16_products_with_a_few_input_features():
    """D < 16: the input projection and its gradients stay per-row float32 passes (exact on
    bfloat16 values); the recurrent products are bfloat16."""
    module = cellstate.LSTM(3, H, backend="cpu", layer_norm=True).to(BF16)
    x = torch.randn(T, B, 3).to(BF16)
    reference = copy.deepcopy(module).float()
    reference.backend = "reference"
    before = _counts()
    ours = _results(module, x, packed=False)
    _assert_ran(before, whole_sequence=False)
    _assert_close(ours, _results(reference, x.float(), packed=False))


@pytest.mark.parametrize("packed", [False, True], ids=["tensor", "packed"])
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"proj_size": 24}, {"num_layers": 2, "bidirectional": True}],
    ids=["plain", "proj", "stacked"],
)
def test_bf16_products_match_torch_bf16(kwargs, packed):
    """Against torch.nn.LSTM in bfloat16 (oneDNN: bfloat16 products, float32 accumulation) with
    the same weights."""
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(D, H, **kwargs).to(BF16)
    ours = cellstate.LSTM(D, H, backend="cpu", **kwargs).to(BF16)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(T, B, D).to(BF16)
    before = _counts()
    results = _results(ours, x, packed)
    _assert_ran(before)
    _assert_close(results, _results(theirs, x, packed))


def test_float32_and_float64_run_no_bf16_products():
    for dtype in (torch.float32, torch.float64):
        module = cellstate.LSTM(D, H, backend="cpu", proj_size=24).to(dtype)
        before = _counts()
        _results(module, torch.randn(T, B, D, dtype=dtype), packed=False)
        assert _counts() == before, dtype


def test_bf16_products_need_every_matrix_in_bf16():
    """The kernel takes bfloat16 matrices with float32 x as the request for bfloat16 products;
    any other mix is an error that says so."""
    G = 4 * H
    p = LSTMLayerParams(w_ih=torch.randn(G, D), w_hh=torch.randn(G, H).to(BF16))
    with pytest.raises(RuntimeError, match="w_ih, w_hh and w_hr must all be bfloat16"):
        cpu.lstm_layer(torch.randn(T, B, D), torch.zeros(B, H), torch.zeros(B, H), p)


def test_bf16_products_second_order_gradients():
    """create_graph=True through bfloat16 products: the gradient is the kernel's, its graph the
    float32 reference's on the same values (kernels/cpu/ops.py, _with_second_order)."""
    torch.manual_seed(0)
    module = cellstate.LSTM(D, H, backend="cpu").to(BF16)
    reference = copy.deepcopy(module).float()
    reference.backend = "reference"
    x = torch.randn(T, B, D).to(BF16)

    def penalty(m, x):
        x = x.detach().clone().requires_grad_()
        (gx,) = torch.autograd.grad(m(x)[0].float().pow(2).sum(), x, create_graph=True)
        gx.float().pow(2).sum().backward()
        return [(f"grad {n}", p.grad) for n, p in m.named_parameters()]

    before = _counts()
    ours = penalty(module, x)
    _assert_ran(before)
    _assert_close(ours, [(n, g.to(BF16)) for n, g in penalty(reference, x.float())])


def test_bf16_products_under_torch_compile():
    """torch.compile(fullgraph=True) records the custom ops with bfloat16 matrices (their fake
    implementations give bfloat16 weight gradients) and gives eager's results exactly."""
    torch.manual_seed(0)
    module = cellstate.LSTM(D, H, backend="cpu").to(BF16)
    x = torch.randn(T, B, D).to(BF16)
    eager = _results(module, x, packed=False)
    module.zero_grad(set_to_none=True)
    before = _counts()
    compiled = _results(torch.compile(module, fullgraph=True), x, packed=False)
    _assert_ran(before)
    for (name, a), (_, b) in zip(compiled, eager, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), name


def test_bf16_products_on_the_per_step_schedule():
    """Weights beyond a core's L2 (G (D + P) > 2^18): the steps run in order, each product's
    panels split across two threads, each releasing its AMX tiles after its share."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        module = cellstate.LSTM(20, 300, backend="cpu").to(BF16)
        x = torch.randn(T, B, 20).to(BF16)
        reference = copy.deepcopy(module).float()
        reference.backend = "reference"
        before = _counts()
        ours = _results(module, x, packed=True)
        _assert_ran(before)
        _assert_close(ours, _results(reference, x.float(), packed=True))
    finally:
        torch.set_num_threads(threads)


def test_bf16_eager_calls_pass_bf16_to_the_kernel(monkeypatch):
    """In eager mode the kernel takes x, the states and the vectors in bfloat16 and makes the
    float32 copies itself (lstm.cpp, in_float32): no cast runs in Python, and the outputs and
    gradients come back in bfloat16 (the comparisons above check their values)."""
    seen = []
    raw = cpu._raw_lstm_forward

    def recording(*args):
        seen.append([a.dtype for a in args[:6] if isinstance(a, torch.Tensor)])
        return raw(*args)

    monkeypatch.setattr(cpu, "_raw_lstm_forward", recording)
    module = cellstate.LSTM(D, H, backend="cpu").to(BF16)
    output, (h_n, c_n) = module(torch.randn(T, B, D).to(BF16).requires_grad_())
    assert seen == [[BF16] * 6], "x, h0, c0, w_ih, w_hh, b_ih"
    assert output.dtype == h_n.dtype == c_n.dtype == BF16


@pytest.mark.parametrize("layer_norm", [False, True], ids=["plain", "layer_norm"])
def test_bf16_forward_packs_the_stacked_weights(layer_norm):
    """Without layer norm the forward multiplies [x_t h_{t-1}] by W_ih^T stacked over W_hh^T:
    one weight packed per call; with layer norm (each product normalised apart) two."""
    module = cellstate.LSTM(D, H, backend="cpu", layer_norm=layer_norm).to(BF16)
    x = torch.randn(T, B, D).to(BF16)
    before = _counts()
    with torch.no_grad():
        module(x)
    per_step_support = build.load().bf16_product_support()[0]
    expected = (2 if layer_norm else 1) if per_step_support else 0
    assert _counts()[0] - before[0] == expected


def test_bf16_cell_activations_are_accurate():
    """The bfloat16 forward's gate math (bf16_cell.h: AVX-512, a degree-5 exp, approximate
    reciprocals refined by a Newton step) against exact sigmoid and tanh: within 2^-19 relative
    (2^11 times below bfloat16's 2^-8; measured: 2^-20.5), exact at 0, +-inf and in saturation,
    NaN kept. Builds without AVX-512 have none and say so."""
    x = torch.cat(
        [
            torch.linspace(-110, 110, 20001),
            torch.logspace(-30, 0, 301),
            -torch.logspace(-30, 0, 301),
            torch.tensor([0.0, -0.0, 1e-30, -1e-30, 1e-6, 0.625, -0.625, 0.62499994, 20.0]),
            torch.tensor([-87.0, -95.0, -103.5, -104.0, -200.0, 1e30, -1e30]),
            torch.tensor([float("inf"), float("-inf"), float("nan")]),
        ]
    )
    kernel = build.load()
    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        with pytest.raises(RuntimeError, match="no vectorised bfloat16 cell"):
            kernel.bf16_cell_activations(x)
        return
    sigmoid, tanh = kernel.bf16_cell_activations(x)
    ulps = {"rtol": 2.0**-19, "atol": 2e-44}  # (denormal sigmoids: a few denormal steps)
    torch.testing.assert_close(sigmoid.double(), torch.sigmoid(x.double()), **ulps, equal_nan=True)
    torch.testing.assert_close(tanh.double(), torch.tanh(x.double()), **ulps, equal_nan=True)
    assert sigmoid[x > 18].eq(1).all() and sigmoid[x < -104].eq(0).all()
    assert tanh[x > 9.5].eq(1).all() and tanh[x < -9.5].eq(-1).all()
    assert torch.equal(tanh[x == 0], x[x == 0])  # tanh(-0) = -0


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"proj_size": 24}, {"layer_norm": True}, {"zoneout": (0.3, 0.5)}],
    ids=["plain", "proj", "layer_norm", "zoneout"],
)
@pytest.mark.parametrize("d", [D, 25], ids=["even", "odd"])
def test_bf16_kernel_casts_equal_python_casts(kwargs, d, monkeypatch):
    """Eager calls give the kernel x in bfloat16, which it reads as it is (stacked panels,
    packed from the bfloat16 w_ih and w_hh) or copies to float32 (layer norm), and it writes
    the output in bfloat16; the path torch.compile records casts x and the output in Python
    (_lstm_in_bf16_products). Both give the same bits, padding (lengths) and an odd D + H
    (a zero row in the stacked panels) included."""
    torch.manual_seed(0)
    module = cellstate.LSTM(d, H, backend="cpu", **kwargs).to(BF16)
    x = torch.randn(T, B, d).to(BF16)
    before = _counts()
    eager = half_precision_results(module, x, True, lengths=LENGTHS)
    _assert_ran(before)
    module.zero_grad(set_to_none=True)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # the traced route
    cast = half_precision_results(module, x, True, lengths=LENGTHS)
    for (name, a), (_, b) in zip(eager, cast, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), name


def test_bf16_products_match_torch_bf16_with_odd_depth():
    """D + H odd (the stacked panels end in a zero row), one step and many: against
    torch.nn.LSTM in bfloat16."""
    for steps in (1, T):
        torch.manual_seed(0)
        theirs = torch.nn.LSTM(25, H).to(BF16)
        ours = cellstate.LSTM(25, H, backend="cpu").to(BF16)
        ours.load_state_dict(theirs.state_dict())
        x = torch.randn(steps, B, 25).to(BF16)
        _assert_close(
            half_precision_results(ours, x, False, lengths=None),
            half_precision_results(theirs, x, False, lengths=None),
        )


@pytest.mark.parametrize("forget_bias", [7.0, 30.0], ids=["f=0.999", "f=1"])
def test_bf16_saved_gates_keep_forget_gates_near_one(forget_bias):
    """Backward reads the gates that the forward saved in bfloat16. A forget gate of 0.999,
    whose nearest bfloat16 value is 1, must still carry 0.999^T to c_0 (0.91 over 100 steps, not
    1), and a saturated one (exactly 1 in float32) exactly 1: against the float32 reference.
    (Small weights: the paths through h add little.)"""
    steps = 100
    torch.manual_seed(0)
    module = cellstate.LSTM(D, H, backend="cpu")
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(0.01)
        module.bias_ih_l0[H : 2 * H] = forget_bias
    module = module.to(BF16)
    reference = copy.deepcopy(module).float()
    reference.backend = "reference"
    x = torch.randn(steps, B, D).to(BF16)
    h0 = torch.zeros(1, B, H, dtype=BF16)
    c0 = torch.randn(1, B, H).to(BF16)

    def dc0(model, dtype):
        c = c0.to(dtype).clone().requires_grad_()
        _, (_, c_n) = model(x.to(dtype), (h0.to(dtype), c))
        c_n.float().sum().backward()
        return c.grad.float()

    before = _counts()
    ours = dc0(module, BF16)
    _assert_ran(before)
    expected = dc0(reference, torch.float32)
    assert (expected.mean() < 0.95) == (forget_bias == 7.0)
    torch.testing.assert_close(ours, expected, rtol=1e-2, atol=1e-3)
