"""The CPU kernel's sigmoid and tanh saturate exactly where the correctly rounded functions do
(mpmath at 200 bits is the judge), over the whole float range, and stay within a few ulp of
torch's own activations; at saturation the weight gradient is exactly torch.nn.LSTM's zero.

The kernel's activations are read through a one-step LSTM whose pre-activations are its biases
(weights and input zero): with c0 = 1 and the input gate at -inf, c1 = sigmoid(forget bias);
with c0 = 0 and the input gate at +inf, c1 = tanh(cell-input bias).
"""

import math

import mpmath
import numpy as np
import pytest
import torch

import cellstate
from tests.differential import EXACT

mpmath.mp.prec = 200
NUMPY_DTYPE = {torch.float32: np.float32, torch.float64: np.float64}
CHUNK = 512  # units per LSTM call: the weights are (4 CHUNK, CHUNK)


def _kernel(values: torch.Tensor, function: str) -> torch.Tensor:
    """sigmoid or tanh of ``values`` (N,) as the CPU kernel's gate math computes them."""
    out = []
    for part in values.split(CHUNK):
        H = len(part)
        lstm = cellstate.LSTM(1, H, backend="cpu", dtype=values.dtype)
        bias = torch.zeros(4, H, dtype=values.dtype)  # gates i, f, g, o
        if function == "sigmoid":
            bias[0], bias[1], c0 = -math.inf, part, 1.0
        else:
            bias[0], bias[2], c0 = math.inf, part, 0.0
        with torch.no_grad():
            for name, p in lstm.named_parameters():
                p.copy_(bias.flatten() if name == "bias_ih_l0" else torch.zeros_like(p))
            x = torch.zeros(1, 1, 1, dtype=values.dtype)
            h0 = torch.zeros(1, 1, H, dtype=values.dtype)
            _, (_, c1) = lstm(x, (h0, torch.full_like(h0, c0)))
        out.append(c1.flatten())
    return torch.cat(out)


def _exact(function: str, x: float) -> mpmath.mpf:
    x = mpmath.mpf(x)
    return mpmath.tanh(x) if function == "tanh" else 1 / (1 + mpmath.exp(-x))


def _rounds_to(value: mpmath.mpf, target: float, np_dtype) -> bool:
    """Whether ``value`` rounds to ``target`` in ``np_dtype``: no float of it is nearer (a tie,
    which only 0 and 1 could meet, goes to them: their mantissa is even)."""
    t = np_dtype(target)
    distance = abs(value - mpmath.mpf(float(t)))
    return all(
        distance <= abs(value - mpmath.mpf(float(np.nextafter(t, np_dtype(direction)))))
        for direction in (-np.inf, np.inf)
    )


def _boundary(function: str, target: float, lo: float, hi: float, np_dtype) -> float:
    """The float between lo and hi where the correctly rounded function starts (target 1: the
    smallest x) or stops (target 0: the largest x) rounding to ``target``, by bisection."""
    lo, hi = np_dtype(lo), np_dtype(hi)
    inside_hi = target == 1.0  # for 1 the saturated side is the upper one
    while True:
        mid = np_dtype((float(lo) + float(hi)) / 2)
        if mid in (lo, hi):
            break
        saturated = _rounds_to(_exact(function, float(mid)), target, np_dtype)
        if saturated == inside_hi:
            hi = mid
        else:
            lo = mid
    return float(hi) if inside_hi else float(lo)


def _boundaries(dtype) -> dict:
    np_dtype = NUMPY_DTYPE[dtype]
    if dtype == torch.float32:
        ranges = {"tanh": (8, 10), "sigmoid_one": (16, 18), "sigmoid_zero": (-110, -100)}
    else:
        ranges = {"tanh": (18, 20), "sigmoid_one": (36, 38), "sigmoid_zero": (-760, -740)}
    return {
        "tanh": _boundary("tanh", 1.0, *ranges["tanh"], np_dtype),
        "sigmoid_one": _boundary("sigmoid", 1.0, *ranges["sigmoid_one"], np_dtype),
        "sigmoid_zero": _boundary("sigmoid", 0.0, *ranges["sigmoid_zero"], np_dtype),
    }


def _inputs(dtype, boundaries: dict) -> torch.Tensor:
    """Both signs of: zero, denormals, every power of two of the range with random mantissas,
    and each saturation boundary with its 4 neighbours either side; plus +-inf."""
    info = np.finfo(NUMPY_DTYPE[dtype])
    rng = np.random.default_rng(0)
    exponents = np.arange(info.minexp - info.nmant, info.maxexp, dtype=np.float64)
    magnitudes = [0.0, float(info.smallest_subnormal), float(info.tiny), float(info.max)]
    for _ in range(3):
        magnitudes += list(np.ldexp(1 + rng.random(len(exponents)), exponents.astype(int)))
    magnitudes += list(np.linspace(0, 40, 4001))  # dense where the functions bend
    for b in boundaries.values():
        neighbour = np.asarray(abs(b), NUMPY_DTYPE[dtype])
        for direction in (-np.inf, np.inf):
            point = neighbour
            for _ in range(5):
                magnitudes.append(float(point))
                point = np.nextafter(point, NUMPY_DTYPE[dtype](direction))
    x = torch.tensor(magnitudes, dtype=torch.float64).to(dtype)
    x = x[torch.isfinite(x)]
    return torch.cat([x, -x, torch.tensor([math.inf, -math.inf], dtype=dtype)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_activations_saturate_where_the_correctly_rounded_functions_do(dtype):
    b = _boundaries(dtype)
    x = _inputs(dtype, b)
    sig, tanh = _kernel(x, "sigmoid"), _kernel(x, "tanh")
    xd = x.double()
    for what, got, expected in (
        ("tanh = +-1", tanh.abs() == 1, xd.abs() >= b["tanh"]),
        ("sigmoid = 1", sig == 1, xd >= b["sigmoid_one"]),
        ("sigmoid = 0", sig == 0, xd <= b["sigmoid_zero"]),
    ):
        wrong = x[got != expected]
        assert len(wrong) == 0, f"{dtype} {what} where the correctly rounded value is not (or the "
        f"reverse) at {wrong[:8].tolist()}; boundary {b}"
    # Beside each boundary the kernel gives exactly the correctly rounded value.
    for function, boundary in (
        ("tanh", b["tanh"]),
        ("sigmoid", b["sigmoid_one"]),
        ("sigmoid", b["sigmoid_zero"]),
    ):
        near = x[(xd - boundary).abs() < 1e-3 * abs(boundary)]
        assert len(near) >= 10
        for xi, yi in zip(near.tolist(), _kernel(near, function).tolist(), strict=True):
            assert _rounds_to(_exact(function, xi), yi, NUMPY_DTYPE[dtype]), (function, xi, yi)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_activations_match_torch_over_the_whole_range(dtype):
    x = _inputs(dtype, _boundaries(dtype))
    info = torch.finfo(dtype)
    # Relative: a few ulp. Absolute: torch's own sigmoid flushes its denormal tail to 0.
    tol = {"rtol": 4 * info.eps, "atol": info.tiny}
    torch.testing.assert_close(_kernel(x, "tanh"), torch.tanh(x), **tol)
    torch.testing.assert_close(_kernel(x, "sigmoid"), torch.sigmoid(x), **tol)
    nan = torch.tensor([math.nan], dtype=dtype)
    assert _kernel(nan, "tanh").isnan().all() and _kernel(nan, "sigmoid").isnan().all()


@pytest.mark.parametrize("scale", [1e6, 1e30])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_weight_gradient_is_zero_at_saturation_like_torch(dtype, scale):
    """Every gate saturated: torch.nn.LSTM's dW_ih is exactly 0, and so is the kernel's (a tanh
    one ulp short of 1 made it 0.12 at 1e6 and 2.4e24 at 1e30)."""
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(2, 3, dtype=dtype)
    ours = cellstate.LSTM(2, 3, backend="cpu", dtype=dtype)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(4, 2, 2, dtype=dtype).sign() * scale  # (T, B, D)
    for module in (theirs, ours):
        out, (h, c) = module(x)
        (out.sum() + c.sum()).backward()
    assert (theirs.weight_ih_l0.grad == 0).all()
    torch.testing.assert_close(ours.weight_ih_l0.grad, theirs.weight_ih_l0.grad, **EXACT)
