"""Bernoulli masks (zoneout's) from a counter-based hash, the same bits on every device.

Element k (row-major) of a mask drawn with seed s is 1 where ``hash(s, k) >> 8 < p * 2^24``:
probability p to 2^-24, one 64-bit seed per mask drawn from torch's default CPU generator (so
``torch.manual_seed`` reproduces it). With the CPU kernel loaded the bits are computed in C++
(``kernels/cpu/masks.cpp``: vectorised and threaded, 0.7 ms for 4M elements on 2 cores where
``torch.bernoulli`` takes 23 ms); anywhere else (other devices, under torch.compile, a CPU
without the kernel built) with the integer tensor ops below, which give the same bits (75 ms
for 4M elements on the same CPU), so both backends see the same masks.

The hash is Wellons' "lowbias32" mixer applied twice: mix(mix(lo(k) ^ lo(s)) ^ hi(k) ^ hi(s)),
with lo / hi the 32-bit halves.
"""

import math

import torch
from torch import Tensor

from cellstate.kernels.cpu import build

MASK32 = 0xFFFFFFFF
SEED_BITS = 62


def _mul32(x: Tensor, c: int) -> Tensor:
    """(x * c) mod 2^32 for x < 2^32 in int64 without overflow: c in 16-bit halves."""
    low, high = c & 0xFFFF, c >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & MASK32


def _mix(x: Tensor) -> Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def element_hash(seed: int | Tensor, k: Tensor) -> Tensor:
    """The 32-bit hash of elements ``k`` (int64 indices) under ``seed``."""
    return _mix(_mix((k & MASK32) ^ (seed & MASK32)) ^ (k >> 32) ^ (seed >> 32))


def hashed_mask(seed: int | Tensor, shape: tuple[int, ...], p: float, like: Tensor) -> Tensor:
    """The mask with torch integer ops: any device, dtype of ``like``; seed an int or a 0-dim
    int64 tensor."""
    h = element_hash(seed, torch.arange(math.prod(shape), dtype=torch.int64, device=like.device))
    limit = math.ceil(p * 2**24)  # integers below p * 2^24
    return ((h >> 8) < limit).to(like.dtype).view(shape)


def bernoulli_mask(shape: tuple[int, ...], p: float, like: Tensor) -> Tensor:
    """A 0/1 mask of ``shape``, 1 with probability p, on ``like``'s device and dtype."""
    seed_tensor = torch.randint(0, 2**SEED_BITS, ())
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        # traced: the seed stays a tensor (a fresh draw per call), no call into C++
        return hashed_mask(seed_tensor, shape, p, like)
    seed = int(seed_tensor)
    if like.device.type == "cpu" and like.dtype in (torch.float32, torch.float64):
        if build.is_built():  # never compiles for a mask
            try:
                return build.load().bernoulli_mask(seed, list(shape), p, like.dtype)
            except RuntimeError:
                pass  # the torch ops below give the same bits
    return hashed_mask(seed, shape, p, like)
