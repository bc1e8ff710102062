"""Stage B: the whole LSTM recurrence in one launch forward and one backward (persistent).

One program per tile of BLOCK_B batch rows runs every step of the sequence. A step is the same
work as Stage A's step (``lstm_kernels``), whose kernels are called here as functions: the
recurrent product of this program's rows with W_hh (``rows_times_matrix``, over tiles of W_hh
read from L2/L1 at each step), then the fused step of every variant. Calling Stage A's step
keeps one copy of each variant's math (layer norm, peepholes, the zoneout and recurrent
masks the layer draws, lengths), so the two stages cannot drift apart. Rows never depend
on other programs' rows, so no cross-program barrier is needed and the kernels run unchanged
under ``TRITON_INTERPRET=1``. Between the phases of a step the program's own threads exchange
rows through global memory (h, c, the product), made visible by ``tl.debug_barrier()`` (a
CTA barrier orders the block's global memory accesses, as __syncthreads does).

Rows per program: 16 where the products run on tensor cores (16-bit, or float32 with TF32; 16
is tl.dot's smallest M), 4 otherwise (float32 without TF32 runs on the FMA units either way, so
fewer rows spread a small batch over more SMs); ``persistent_ops`` chooses, untuned.

W_hh is not pinned in registers: a (4H, H) matrix of H=128 is 256 KB in float32, past the
register file of an SM, so it is streamed in (BLOCK_N, BLOCK_K) tiles that stay cache-resident
across steps. What removing per-step launches gains over Stage A, and whether holding W_hh in
registers or shared memory would gain more, is for a GPU to measure (benchmarks/gpu_check.sh).
"""

import triton
import triton.language as tl

from cellstate.kernels.triton.lstm_kernels import (
    lstm_backward_projected,
    lstm_backward_step,
    lstm_forward_projected,
    lstm_forward_step,
)


@triton.jit
def rows_times_matrix(
    src, w, dst, B, K, N, s_n, s_k,
    WIDE: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """dst[r, n] = sum_k src[r, k] * w[n * s_n + k * s_k] for this program's rows r of the
    row-major src (B, K) and dst (B, N), in float32 (float64 if WIDE), stored in dst's dtype.
    With 16 rows or more, tl.dot (tensor cores for 16-bit and TF32); with fewer (tl.dot's
    smallest M is 16), products and sums on the FMA units. UPCAST: 16-bit operands multiplied
    in float32 (the interpreter's bfloat16 dot is wrong)."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    in_rows = (rows < B)[:, None]
    ks = tl.arange(0, BLOCK_K)
    ns = tl.arange(0, BLOCK_N)
    for n0 in range(0, N, BLOCK_N):
        n = n0 + ns
        acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float64 if WIDE else tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + ks
            x = tl.load(
                src + rows[:, None] * K + k[None, :], mask=in_rows & (k < K)[None, :], other=0.0
            )  # (BLOCK_B, BLOCK_K)
            y = tl.load(
                w + n[None, :] * s_n + k[:, None] * s_k,
                mask=(k < K)[:, None] & (n < N)[None, :],
                other=0.0,
            )  # (BLOCK_K, BLOCK_N)
            if BLOCK_B >= 16:
                if UPCAST:
                    x = x.to(tl.float32)
                    y = y.to(tl.float32)
                acc = tl.dot(x, y, acc, input_precision=PRECISION)
            else:
                x = x.to(acc.dtype)
                acc += tl.sum(x[:, :, None] * y.to(acc.dtype)[None, :, :], 1)
        mask = in_rows & (n < N)[None, :]
        tl.store(dst + rows[:, None] * N + n[None, :], acc.to(dst.dtype.element_ty), mask=mask)


@triton.jit
def _forward_step(
    t, B, H, P,
    xa, hw, gates, cell, c_all, h_all, hin, out, y, n_hh, stats,
    w_ci, w_cf, w_co, ln_hh, ln_cw, ln_cb,
    zh, zh_st, zh_sb, zh_sj, zc, zc_st, zc_sb, zc_sj, rmask, lengths, w_hh, w_hr, hn,
    NG: tl.constexpr, PEEPHOLE: tl.constexpr, LN_HH: tl.constexpr, LN_C: tl.constexpr,
    ZONEOUT_H: tl.constexpr, ZONEOUT_C: tl.constexpr, RMASK: tl.constexpr,
    LENGTHS: tl.constexpr, PROJ: tl.constexpr, WRITE_HIN: tl.constexpr, EPS: tl.constexpr,
    WIDE: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Step t of this program's rows: hw = hin[t] W_hh^T (B, G), Stage A's fused step, and with
    a projection hn = y[t] W_hr^T (B, P) and the projected step."""
    step = t.to(tl.int64)
    rows_times_matrix(
        hin + step * B * P, w_hh, hw, B, P, NG * H, P, 1,
        WIDE, PRECISION, UPCAST, BLOCK_B, BLOCK_K, BLOCK_N,
    )  # fmt: skip
    tl.debug_barrier()
    lstm_forward_step(
        t, B, H, P, xa, hw, gates, cell, c_all, h_all, hin, out, y, n_hh, stats,
        w_ci, w_cf, w_co, ln_hh, ln_cw, ln_cb,
        zh, zh_st, zh_sb, zh_sj, zc, zc_st, zc_sb, zc_sj, rmask, lengths,
        NG, PEEPHOLE, LN_HH, LN_C, ZONEOUT_H, ZONEOUT_C, RMASK, LENGTHS, PROJ, WRITE_HIN, EPS,
        BLOCK_B, BLOCK_H,
    )  # fmt: skip
    if PROJ:
        tl.debug_barrier()
        rows_times_matrix(
            y + step * B * H, w_hr, hn, B, H, P, H, 1,
            WIDE, PRECISION, UPCAST, BLOCK_B, BLOCK_K, BLOCK_N,
        )  # fmt: skip
        tl.debug_barrier()
        lstm_forward_projected(
            t, B, P, hn, h_all, hin, out, zh, zh_st, zh_sb, zh_sj, rmask, lengths,
            ZONEOUT_H, RMASK, LENGTHS, WRITE_HIN, BLOCK_B, BLOCK_P,
        )  # fmt: skip
    tl.debug_barrier()


@triton.jit(do_not_specialize=["T"])
def lstm_forward_persistent(
    T, B, H, P,
    xa, hw, gates, cell, c_all, h_all, hin, out, y, n_hh, stats,
    w_ci, w_cf, w_co, ln_hh, ln_cw, ln_cb,
    zh, zh_st, zh_sb, zh_sj, zc, zc_st, zc_sb, zc_sj, rmask, lengths, w_hh, w_hr, hn,
    NG: tl.constexpr, PEEPHOLE: tl.constexpr, LN_HH: tl.constexpr, LN_C: tl.constexpr,
    ZONEOUT_H: tl.constexpr, ZONEOUT_C: tl.constexpr, RMASK: tl.constexpr,
    LENGTHS: tl.constexpr, PROJ: tl.constexpr, EPS: tl.constexpr,
    WIDE: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Every step of this program's rows (the arguments of ``lstm_forward_step`` with T for t,
    plus W_hh (G, P), W_hr (P, H) and hw (B, G), hn (B, P) for the products). hin[0], h_all[0]
    and c_all[0] are set by the caller; the last step writes no hin[T]."""
    for i in range(T - 1):
        t = tl.cast(
            i, tl.int32
        )  # a tensor, as the step functions expect (the interpreter's i is not)
        _forward_step(
            t, B, H, P, xa, hw, gates, cell, c_all, h_all, hin, out, y, n_hh, stats,
            w_ci, w_cf, w_co, ln_hh, ln_cw, ln_cb,
            zh, zh_st, zh_sb, zh_sj, zc, zc_st, zc_sb, zc_sj, rmask, lengths, w_hh, w_hr, hn,
            NG, PEEPHOLE, LN_HH, LN_C, ZONEOUT_H, ZONEOUT_C, RMASK, LENGTHS, PROJ, True, EPS,
            WIDE, PRECISION, UPCAST, BLOCK_B, BLOCK_H, BLOCK_P, BLOCK_K, BLOCK_N,
        )  # fmt: skip
    _forward_step(
        T - 1, B, H, P, xa, hw, gates, cell, c_all, h_all, hin, out, y, n_hh, stats,
        w_ci, w_cf, w_co, ln_hh, ln_cw, ln_cb,
        zh, zh_st, zh_sb, zh_sj, zc, zc_st, zc_sb, zc_sj, rmask, lengths, w_hh, w_hr, hn,
        NG, PEEPHOLE, LN_HH, LN_C, ZONEOUT_H, ZONEOUT_C, RMASK, LENGTHS, PROJ, False, EPS,
        WIDE, PRECISION, UPCAST, BLOCK_B, BLOCK_H, BLOCK_P, BLOCK_K, BLOCK_N,
    )  # fmt: skip


@triton.jit(do_not_specialize=["T"])
def lstm_backward_persistent(
    T, B, H, P,
    dy, d_output, d_h_all, dh_carry, dh_gemm, d_c_all, dc_carry, d_gates,
    gates, cell, c_all, n_hh, stats, w_ci, w_cf, w_co, ln_hh, ln_cw, ln_cb,
    zh, zh_st, zh_sb, zh_sj, zc, zc_st, zc_sb, zc_sj, rmask, lengths,
    da, dhw, dcs, w_hh, w_hr, dhn,
    NG: tl.constexpr, PEEPHOLE: tl.constexpr, LN_HH: tl.constexpr, LN_C: tl.constexpr,
    ZONEOUT_H: tl.constexpr, ZONEOUT_C: tl.constexpr, RMASK: tl.constexpr,
    LENGTHS: tl.constexpr, PROJ: tl.constexpr, HAS_DOUT: tl.constexpr,
    HAS_DH_ALL: tl.constexpr, HAS_DC_ALL: tl.constexpr, HAS_DGATES: tl.constexpr,
    WIDE: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """BPTT through every step, last to first (the arguments of ``lstm_backward_step`` with T
    for t, plus W_hh, W_hr and dhn (T, B, P)). dh_gemm (B, P) must be zero on entry: the last
    step has no later step's product, and adding zero keeps one compiled step for all."""
    G = NG * H
    for i in range(T):
        t = T - 1 - i
        step = t.to(tl.int64)
        if PROJ:
            lstm_backward_projected(
                t, B, P, d_output, d_h_all, dh_carry, dh_gemm, dhn, zh, zh_st, zh_sb, zh_sj,
                rmask, lengths, True, HAS_DOUT, HAS_DH_ALL, ZONEOUT_H, RMASK, LENGTHS,
                BLOCK_B, BLOCK_P,
            )  # fmt: skip
            tl.debug_barrier()
            # dy = dhn[t] W_hr (B, H)
            rows_times_matrix(
                dhn + step * B * P, w_hr, dy, B, P, H, 1, H,
                WIDE, PRECISION, UPCAST, BLOCK_B, BLOCK_K, BLOCK_N,
            )  # fmt: skip
            tl.debug_barrier()
        lstm_backward_step(
            t, B, H, P, dy, d_output, d_h_all, dh_carry, dh_gemm, d_c_all, dc_carry, d_gates,
            gates, cell, c_all, n_hh, stats, w_ci, w_cf, w_co, ln_hh, ln_cw, ln_cb,
            zh, zh_st, zh_sb, zh_sj, zc, zc_st, zc_sb, zc_sj, rmask, lengths, da, dhw, dcs,
            NG, PEEPHOLE, LN_HH, LN_C, ZONEOUT_H, ZONEOUT_C, RMASK, LENGTHS, PROJ, True,
            HAS_DOUT, HAS_DH_ALL, HAS_DC_ALL, HAS_DGATES, BLOCK_B, BLOCK_H,
        )  # fmt: skip
        tl.debug_barrier()
        # dh_gemm = dhw[t] W_hh (B, P)
        rows_times_matrix(
            dhw + step * B * G, w_hh, dh_gemm, B, G, P, 1, P,
            WIDE, PRECISION, UPCAST, BLOCK_B, BLOCK_K, BLOCK_N,
        )  # fmt: skip
        tl.debug_barrier()
