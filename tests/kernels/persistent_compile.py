"""Compile the persistent kernels (Stage B) for an H100/H200 (sm_90) without a GPU, with the
ptxas that ships with triton: every variant, on the tensor-core path (16 rows, bfloat16) and
on the FMA path (4 rows, float32). The interpreter does not compile, so this is the CPU's check
that the kernels are valid Triton for a GPU. Run by tests/kernels/test_triton_persistent.py:

    PYTHONPATH=src python -m tests.kernels.persistent_compile    (TRITON_INTERPRET unset)
"""

import os

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from cellstate.kernels.triton import persistent_kernels

if os.environ.get("TRITON_INTERPRET") == "1":
    raise SystemExit("unset TRITON_INTERPRET: the interpreted kernels cannot be compiled")

SM_90 = GPUTarget("cuda", 90, 32)
SCALARS = {"T", "B", "H", "P", "zh_st", "zh_sb", "zh_sj", "zc_st", "zc_sb", "zc_sj"}
LOW = {"hw", "hin", "out", "y", "w_hh", "w_hr", "hn", "dhw", "dhn", "dy", "dh_gemm"}  # 16-bit
EVERY_VARIANT = dict(
    NG=3, PEEPHOLE=True, LN_HH=True, LN_C=True, ZONEOUT_H=True, ZONEOUT_C=True, RMASK=True,
    LENGTHS=True, PROJ=True,
)  # fmt: skip
EVERY_GRADIENT = dict(HAS_DOUT=True, HAS_DH_ALL=True, HAS_DC_ALL=True, HAS_DGATES=True)


def _type(name: str, constexprs: dict, low: str) -> str:
    if name in constexprs:
        return "constexpr"
    if name in SCALARS:
        return "i32"
    if name == "lengths":
        return "*i64"
    return f"*{low}" if name in LOW else "*fp32"


def main() -> None:
    for rows, low, precision in ((16, "bf16", "tf32"), (4, "fp32", "ieee")):
        blocks = dict(
            WIDE=False, PRECISION=precision, UPCAST=False, BLOCK_B=rows, BLOCK_H=16,
            BLOCK_P=16, BLOCK_K=16, BLOCK_N=64,
        )  # fmt: skip
        for kernel, constexprs in (
            (persistent_kernels.lstm_forward_persistent, {**EVERY_VARIANT, "EPS": 1e-5}),
            (persistent_kernels.lstm_backward_persistent, {**EVERY_VARIANT, **EVERY_GRADIENT}),
        ):
            constexprs = {**constexprs, **blocks}
            signature = {n: _type(n, constexprs, low) for n in kernel.arg_names}
            source = ASTSource(kernel, signature, constexprs)
            triton.compile(source, target=SM_90, options={"num_warps": 4})
            print(f"compiled {kernel.__name__} for sm_90, {rows} rows, {low}", flush=True)


if __name__ == "__main__":
    main()
