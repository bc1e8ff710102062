"""Stage B's driver: the persistent kernels (``persistent_kernels``) in place of Stage A's
per-step loop in ``lstm_ops``, one launch forward and one backward, on the same buffers and
with the same arguments as Stage A's step kernels (``t`` replaced by T).

Shapes: T time, B batch, H hidden, P output (proj_size or H), G gate rows (4H or 3H).
"""

from __future__ import annotations

import torch
from torch import Tensor

from cellstate.kernels.triton import launch

MAX_UNITS = 256  # H and P: one program holds whole rows (BLOCK_B, 4, H) of gates per step
BLOCK_B = 16  # batch rows per program: the smallest M of tl.dot on a GPU (untuned)
BLOCK_MATRIX = 64  # the (BLOCK_K, BLOCK_N) tiles of W_hh and W_hr per dot (untuned)


def unsupported(shape: tuple[int, int, int, int]) -> str | None:
    """Why Stage B does not take a layer of shape (T, B, H, P), or None."""
    _, _, H, P = shape
    if max(H, P) > MAX_UNITS:
        return (
            f"the persistent kernel (Stage B) takes hidden and output sizes up to {MAX_UNITS}; "
            f"got H={H}, P={P}"
        )
    return None


def _config(H: int, P: int, G: int, dtype: torch.dtype, interpreted: bool) -> dict:
    """Block sizes, warps and the recurrent products' precision for weights of ``dtype``."""
    block_h = launch.next_power_of_2(H)
    tile = BLOCK_B * 4 * block_h  # elements of one program's gate tile
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    fp32_precision = "tf32" if allow_tf32 and not interpreted else "ieee"
    return dict(
        WIDE=dtype == torch.float64,
        PRECISION=fp32_precision if dtype in (torch.float32, torch.float64) else "tf32",
        UPCAST=interpreted and dtype == torch.bfloat16,  # the interpreter's bf16 dot is wrong
        BLOCK_B=BLOCK_B,
        BLOCK_H=block_h,
        BLOCK_P=launch.next_power_of_2(P),
        BLOCK_K=min(BLOCK_MATRIX, max(16, launch.next_power_of_2(max(G, P)))),
        BLOCK_N=min(BLOCK_MATRIX, max(16, launch.next_power_of_2(max(G, P)))),
        num_warps=min(16, max(4, tile // 1024)),
    )


def forward(T: int, step_args: tuple, w_hh: Tensor, w_hr: Tensor, hn: Tensor, **flags) -> None:
    """Every forward step in one launch. step_args: ``lstm_forward_step``'s arguments after t
    (B, H, P, xa, hw, ...); w_hr: the projection or a dummy; hn (B, P): its product's buffer;
    flags: the step kernel's constexprs but WRITE_HIN and the block sizes."""
    _launch("lstm_forward_persistent", T, step_args, w_hh, w_hr, hn, flags)


def backward(T: int, step_args: tuple, w_hh: Tensor, w_hr: Tensor, dhn: Tensor, **flags) -> None:
    """BPTT through every step in one launch. step_args: ``lstm_backward_step``'s arguments
    after t (B, H, P, dy, ...), its dh_gemm (B, P) zero; dhn (T, B, P): with a projection, the
    gradient of W_hr y; flags: the step kernel's constexprs but HAS_GEMM and the block sizes."""
    _launch("lstm_backward_persistent", T, step_args, w_hh, w_hr, dhn, flags)


def _launch(name: str, T: int, step_args: tuple, w_hh, w_hr, buffer, flags: dict) -> None:
    B, H, P = step_args[:3]
    k = launch.kernels("persistent_kernels")
    config = _config(H, P, w_hh.shape[0], w_hh.dtype, k.interpreted)
    grid = ((B + BLOCK_B - 1) // BLOCK_B,)
    getattr(k, name)[grid](T, *step_args, w_hh, w_hr, buffer, **flags, **config)
