"""Numerically stable activations for the Triton kernels, in the dtype of their argument.

Neither overflows ``exp`` (each takes ``exp`` of a non-positive number), and both saturate
exactly as torch's do: sigmoid to 0 and 1, tanh to -1 and 1 (at |x| > 9 in float32). Near 0,
tanh uses its Taylor series to x^11, whose relative error is below 2e-17 for |x| < 1/16, so that
small arguments keep their relative precision in float64 too ((1 - e) / (1 + e) alone loses it
to cancellation; from 1/16 up it loses at most a few ulp).
"""

import triton
import triton.language as tl


@triton.jit
def sigmoid(x):
    e = tl.exp(-tl.abs(x))  # in (0, 1]
    return tl.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@triton.jit
def tanh(x):
    ax = tl.abs(x)
    e = tl.exp(-2.0 * ax)  # in (0, 1]
    large = (1.0 - e) / (1.0 + e)
    x2 = x * x
    series = x2 * (-17.0 / 315.0 + x2 * (62.0 / 2835.0 + x2 * (-1382.0 / 155925.0)))
    small = ax * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + series)))
    r = tl.where(ax < 0.0625, small, large)
    return tl.where(x < 0, -r, r)
