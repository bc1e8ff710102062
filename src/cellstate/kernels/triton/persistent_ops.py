"""Stage B's driver: the persistent kernels (``persistent_kernels``) in place of Stage A's
per-step loop in ``lstm_ops``, one launch forward and one backward, on the same buffers and
with the same arguments as Stage A's step kernels (``t`` replaced by T).

Shapes: T time, B batch, H hidden, P output (proj_size or H), G gate rows (4H or 3H).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from cellstate.kernels.triton import launch

MAX_UNITS = 256  # H and P: one program holds whole rows (BLOCK_B, 4, H) of gates per step
ROWS_VARIABLE = "CELLSTATE_TRITON_STAGE_B_ROWS"  # batch rows per program, to measure others
ROWS_CHOICES = ("1", "2", "4", "8", "16", "32", "64")
TENSOR_CORE_ROWS = 16  # the smallest M of tl.dot on a GPU (untuned)
FMA_ROWS = 4  # float32 without TF32: no tensor cores either way, more programs (untuned)
BLOCK_MATRIX = 64  # the (BLOCK_K, BLOCK_N) tiles of W_hh and W_hr per product (untuned)


def unsupported(shape: tuple[int, int, int, int]) -> str | None:
    """Why Stage B does not take a layer of shape (T, B, H, P), or None."""
    T, _, H, P = shape
    if T == 0:
        return "an empty sequence has no steps to run (the kernels run the last step apart)"
    if max(H, P) > MAX_UNITS:
        return (
            f"the persistent kernel (Stage B) takes hidden and output sizes up to {MAX_UNITS}; "
            f"got H={H}, P={P}"
        )
    return None


def rows_per_program(dtype: torch.dtype, tf32: bool) -> int:
    """BLOCK_B: CELLSTATE_TRITON_STAGE_B_ROWS if set, else 16 where the recurrent products can
    run on tensor cores (16-bit weights, or float32 with ``tf32`` allowed), else 4."""
    rows = os.environ.get(ROWS_VARIABLE)
    if rows is not None:
        if rows not in ROWS_CHOICES:
            choices = ", ".join(ROWS_CHOICES)
            raise ValueError(f"{ROWS_VARIABLE} must be one of {choices}; got {rows!r}")
        return int(rows)
    tensor_cores = dtype in (torch.float16, torch.bfloat16) or (dtype == torch.float32 and tf32)
    return TENSOR_CORE_ROWS if tensor_cores else FMA_ROWS


def _config(H: int, P: int, G: int, dtype: torch.dtype, interpreted: bool) -> dict:
    """Block sizes, warps and the recurrent products' precision for weights of ``dtype``."""
    tf32 = torch.backends.cuda.matmul.allow_tf32 and not interpreted
    block_b = rows_per_program(dtype, tf32)
    block_h = launch.next_power_of_2(H)
    tile = block_b * 4 * block_h  # elements of one program's gate tile
    block_matrix = min(BLOCK_MATRIX, max(16, launch.next_power_of_2(max(G, P))))
    return dict(
        WIDE=dtype == torch.float64,
        PRECISION="tf32" if tf32 or dtype in (torch.float16, torch.bfloat16) else "ieee",
        UPCAST=interpreted and dtype == torch.bfloat16,  # the interpreter's bf16 dot is wrong
        BLOCK_B=block_b,
        BLOCK_H=block_h,
        BLOCK_P=launch.next_power_of_2(P),
        BLOCK_K=block_matrix if block_b >= 16 else 16,  # (the FMA path's 3-d product tile)
        BLOCK_N=block_matrix,
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
    grid = ((B + config["BLOCK_B"] - 1) // config["BLOCK_B"],)
    getattr(k, name)[grid](T, *step_args, w_hh, w_hr, buffer, **flags, **config)
