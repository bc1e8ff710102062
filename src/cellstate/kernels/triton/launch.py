"""What the drivers share: the lazily imported kernels, block sizes, absent-tensor arguments.

The kernel modules are imported on the first real call, never at ``import cellstate``: Triton
decides at decoration time whether a kernel runs compiled or interpreted (TRITON_INTERPRET), and
the import costs time that CPU users should not pay.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from torch import Tensor

TILE_ELEMENTS = 2048  # elements of one program's (BLOCK_B, 4, BLOCK_H) gate tile (untuned)

_modules: dict[str, ModuleType] = {}


def kernels(name: str) -> ModuleType:
    """``cellstate.kernels.triton.<name>`` (lstm_kernels or rnn_kernels), imported once."""
    if name not in _modules:
        _modules[name] = importlib.import_module(f"cellstate.kernels.triton.{name}")
        _modules[name].interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    return _modules[name]


def imported_interpreted() -> bool | None:
    """Whether the kernels were imported under TRITON_INTERPRET=1 (None: not imported yet)."""
    if not _modules:
        return None
    return next(iter(_modules.values())).interpreted


def blocks(B: int, N: int, slots: int = 4) -> tuple[int, int, tuple[int]]:
    """BLOCK_B, BLOCK_N and the grid for rows of N columns (``slots`` gates of N each)."""
    block_n = next_power_of_2(N)
    block_b = max(1, min(next_power_of_2(B), TILE_ELEMENTS // (slots * block_n)))
    return block_b, block_n, ((B + block_b - 1) // block_b,)


def warps(block_b: int, block_n: int, slots: int = 4) -> int:
    """Warps per program: 4, or 8 for a tile past TILE_ELEMENTS (one row of H > 512)."""
    return 4 if block_b * slots * block_n <= TILE_ELEMENTS else 8


def next_power_of_2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def zoneout_args(z: Tensor | None, shape: tuple[int, int, int], dummy: Tensor) -> tuple:
    """(pointer, stride_t, stride_b, stride_j) of a zoneout mask (T, B, N) or 0-dim probability."""
    if z is None:
        return dummy, 0, 0, 0
    return (z, *z.expand(shape).stride())


def contiguous_or_none(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.contiguous()
