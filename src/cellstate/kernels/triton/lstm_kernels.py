"""Triton kernels of one LSTM step: forward and BPTT, every variant, one launch each.

Each program owns BLOCK_B whole batch rows (all G gate columns of them), so the layer-norm
reductions (over G for W_hh h, over H for c) stay inside the program: no atomics, no barrier,
and the kernels run unchanged under ``TRITON_INTERPRET=1``. The four gates of a row are one
(BLOCK_B, 4, BLOCK_H) tile (slot k at columns k*H; 3 slots i, g, o without a forget gate).
State math runs in the dtype of the state buffers (float32, or float64 under the interpreter);
16-bit tensors are converted on load and store. ``t`` is the step in the forward time order
(after the reversal of a reverse direction); buffers of a whole sequence are indexed by it.
"""

import triton
import triton.language as tl

from cellstate.kernels.triton.activations import sigmoid, tanh


@triton.jit
def tile(B, N, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's rows (BLOCK_B,), columns (BLOCK_N,) and in-bounds mask (BLOCK_B, BLOCK_N)."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_N)
    return rows, cols, (rows < B)[:, None] & (cols < N)[None, :]


@triton.jit
def running(lengths, rows, B, step, LENGTHS: tl.constexpr):
    """(BLOCK_B, 1) bool: the rows whose sequence has not ended before ``step``."""
    run = (rows >= 0)[:, None]
    if LENGTHS:
        n = tl.load(lengths + rows, mask=rows < B, other=0)
        run = (step < n)[:, None]
    return run


@triton.jit
def _gate(x3, k3, slot):
    """Gate ``slot`` of a (BLOCK_B, 4, BLOCK_H) tile, as (BLOCK_B, BLOCK_H)."""
    return tl.sum(tl.where(k3 == slot, x3, 0.0), 1)


@triton.jit
def _zoneout(z, step, rows, cols, mask, st, sb, sj, like):
    """The zoneout keep-probability or mask of this step's tile, in like's dtype."""
    offs = step * st + rows[:, None] * sb + cols[None, :] * sj
    return tl.load(z + offs, mask=mask, other=0.0).to(like.dtype)


@triton.jit
def _gate_tile(
    t, B, H, lengths, NG: tl.constexpr, LENGTHS: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """Step t's tiles: the (BLOCK_B, BLOCK_H) rows and columns of this program, and the
    (BLOCK_B, 4, BLOCK_H) gate tile (slot k3, column c3) with its offsets into a (T, B, G)
    buffer; row_h: offsets into a (T, B, H) buffer."""
    step = t.to(tl.int64)
    rows, cols, mask = tile(B, H, BLOCK_B, BLOCK_H)
    run = running(lengths, rows, B, step, LENGTHS)
    k3 = tl.arange(0, 4)[None, :, None]
    c3 = cols[None, None, :]
    mask3 = mask[:, None, :] & (k3 < NG)
    off3 = step * B * NG * H + rows[:, None, None] * (NG * H) + k3 * H + c3
    row_h = step * B * H + rows[:, None] * H + cols[None, :]
    return step, rows, cols, mask, run, k3, c3, mask3, off3, row_h


@triton.jit
def _finish_h(
    h_new, step, rows, cols, mask, run, B, P, h_all, hin, out,
    zh, zh_st, zh_sb, zh_sj, rmask,
    ZONEOUT_H: tl.constexpr, RMASK: tl.constexpr, WRITE_HIN: tl.constexpr,
):  # fmt: skip
    """From h_new (BLOCK_B, BLOCK_P): zoneout, the held state of finished rows, the output and
    the next step's GEMM input h * recurrent_mask."""
    row_p = rows[:, None] * P + cols[None, :]
    step_p = step * B * P
    h = tl.load(h_all + step_p + row_p, mask=mask, other=0.0)
    if ZONEOUT_H:
        z = _zoneout(zh, step, rows, cols, mask, zh_st, zh_sb, zh_sj, h)
        h_new = z * h + (1.0 - z) * h_new
    kept = tl.where(run, h_new, h)
    tl.store(h_all + step_p + B * P + row_p, kept, mask=mask)
    tl.store(out + step_p + row_p, tl.where(run, h_new, 0.0).to(out.dtype.element_ty), mask=mask)
    if WRITE_HIN:
        if RMASK:
            kept = kept * tl.load(rmask + row_p, mask=mask, other=0.0).to(kept.dtype)
        tl.store(hin + step_p + B * P + row_p, kept.to(hin.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["t"])
def lstm_forward_step(
    t, B, H, P,
    xa, hw, gates, cell, c_all, h_all, hin, out, y, n_hh, stats,
    w_ci, w_cf, w_co, ln_hh, ln_cw, ln_cb,
    zh, zh_st, zh_sb, zh_sj, zc, zc_st, zc_sb, zc_sj, rmask, lengths,
    NG: tl.constexpr, PEEPHOLE: tl.constexpr, LN_HH: tl.constexpr, LN_C: tl.constexpr,
    ZONEOUT_H: tl.constexpr, ZONEOUT_C: tl.constexpr, RMASK: tl.constexpr,
    LENGTHS: tl.constexpr, PROJ: tl.constexpr, WRITE_HIN: tl.constexpr, EPS: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """Step t: gates from xa[t] (T, B, G) and hw = W_hh h_in (B, G); writes gates[t], cell[t]
    (c before zoneout), c_all[t+1], layer-norm n_hh[t] and stats[t] (rstd of W_hh h, mean and
    rstd of c), and h_all[t+1], out[t], hin[t+1], or y[t] = o * tanh(LN(c)) with a projection."""
    ct = c_all.dtype.element_ty
    G = NG * H
    step, rows, cols, mask, run, k3, c3, mask3, off3, row_h = _gate_tile(
        t, B, H, lengths, NG, LENGTHS, BLOCK_B, BLOCK_H
    )

    a = tl.load(hw + off3 - step * B * G, mask=mask3, other=0.0).to(ct)
    if LN_HH:
        mean = tl.sum(tl.sum(a, 2), 1) / G
        d = tl.where(mask3, a - mean[:, None, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(tl.sum(d * d, 2), 1) / G + EPS)
        n = d * rstd[:, None, None]
        tl.store(n_hh + off3, n, mask=mask3)
        tl.store(stats + (step * B + rows) * 3, rstd, mask=rows < B)
        a = n * tl.load(ln_hh + k3 * H + c3, mask=(k3 < NG) & (c3 < H), other=0.0).to(ct)
    a += tl.load(xa + off3, mask=mask3, other=0.0).to(ct)

    c = tl.load(c_all + row_h, mask=mask, other=0.0)
    a_i = _gate(a, k3, 0)
    a_g = _gate(a, k3, NG - 2)
    a_o = _gate(a, k3, NG - 1)
    if PEEPHOLE:
        a_i += tl.load(w_ci + cols, mask=cols < H, other=0.0).to(ct)[None, :] * c
    i = sigmoid(a_i)
    g = tanh(a_g)
    if NG == 4:
        a_f = _gate(a, k3, 1)
        if PEEPHOLE:
            a_f += tl.load(w_cf + cols, mask=cols < H, other=0.0).to(ct)[None, :] * c
        f = sigmoid(a_f)
        c_new = f * c + i * g
    else:
        c_new = c + i * g  # the constant error carousel of 1997
    if PEEPHOLE:
        a_o += tl.load(w_co + cols, mask=cols < H, other=0.0).to(ct)[None, :] * c_new
    o = sigmoid(a_o)
    shown = c_new
    if LN_C:
        mean_c = tl.sum(tl.where(mask, c_new, 0.0), 1) / H
        dc = tl.where(mask, c_new - mean_c[:, None], 0.0)
        rstd_c = 1.0 / tl.sqrt(tl.sum(dc * dc, 1) / H + EPS)
        tl.store(stats + (step * B + rows) * 3 + 1, mean_c, mask=rows < B)
        tl.store(stats + (step * B + rows) * 3 + 2, rstd_c, mask=rows < B)
        wc = tl.load(ln_cw + cols, mask=cols < H, other=0.0).to(ct)[None, :]
        bc = tl.load(ln_cb + cols, mask=cols < H, other=0.0).to(ct)[None, :]
        shown = dc * rstd_c[:, None] * wc + bc
    h_new = o * tanh(shown)

    acts = tl.where(k3 == 0, i[:, None, :], tl.where(k3 == NG - 2, g[:, None, :], o[:, None, :]))
    if NG == 4:
        acts = tl.where(k3 == 1, f[:, None, :], acts)
    tl.store(gates + off3, acts, mask=mask3)
    tl.store(cell + row_h, c_new, mask=mask)
    if ZONEOUT_C:
        z = _zoneout(zc, step, rows, cols, mask, zc_st, zc_sb, zc_sj, c)
        c_new = z * c + (1.0 - z) * c_new
    tl.store(c_all + B * H + row_h, tl.where(run, c_new, c), mask=mask)
    if PROJ:
        tl.store(y + row_h, h_new.to(y.dtype.element_ty), mask=mask)
    else:
        _finish_h(
            h_new, step, rows, cols, mask, run, B, P, h_all, hin, out,
            zh, zh_st, zh_sb, zh_sj, rmask, ZONEOUT_H, RMASK, WRITE_HIN,
        )  # fmt: skip


@triton.jit(do_not_specialize=["t"])
def lstm_forward_projected(
    t, B, P, hn, h_all, hin, out, zh, zh_st, zh_sb, zh_sj, rmask, lengths,
    ZONEOUT_H: tl.constexpr, RMASK: tl.constexpr, LENGTHS: tl.constexpr,
    WRITE_HIN: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """Step t with a projection: h from hn = W_hr y[t] (B, P) (see ``_finish_h``)."""
    step = t.to(tl.int64)
    rows, cols, mask = tile(B, P, BLOCK_B, BLOCK_P)
    run = running(lengths, rows, B, step, LENGTHS)
    offs = rows[:, None] * P + cols[None, :]
    h_new = tl.load(hn + offs, mask=mask, other=0.0).to(h_all.dtype.element_ty)
    _finish_h(
        h_new, step, rows, cols, mask, run, B, P, h_all, hin, out,
        zh, zh_st, zh_sb, zh_sj, rmask, ZONEOUT_H, RMASK, WRITE_HIN,
    )  # fmt: skip


@triton.jit
def h_grad(
    step, rows, cols, mask, run, B, P, d_output, d_h_all, dh_carry, dh_gemm, dhn,
    zh, zh_st, zh_sb, zh_sj, rmask,
    HAS_GEMM: tl.constexpr, HAS_DOUT: tl.constexpr, HAS_DH_ALL: tl.constexpr,
    ZONEOUT_H: tl.constexpr, RMASK: tl.constexpr, STORE_DHN: tl.constexpr,
):  # fmt: skip
    """The gradient of the new h of step ``step`` (zero on finished rows), from: dh_carry (what
    reaches the state directly from later steps), dh_gemm (= dW_hh-side gradient of the next
    step, W_hh^T d(hw), times the recurrent mask), d_h_all[step+1] and d_output[step].
    Updates dh_carry to what reaches the previous state directly (zoneout's z * dh, or all of it
    on finished rows, whose state is held)."""
    row_p = rows[:, None] * P + cols[None, :]
    step_p = step * B * P
    total = tl.load(dh_carry + row_p, mask=mask, other=0.0)
    if HAS_GEMM:
        gemm = tl.load(dh_gemm + row_p, mask=mask, other=0.0).to(total.dtype)
        if RMASK:
            gemm *= tl.load(rmask + row_p, mask=mask, other=0.0).to(total.dtype)
        total += gemm
    if HAS_DH_ALL:
        total += tl.load(d_h_all + step_p + B * P + row_p, mask=mask, other=0.0).to(total.dtype)
    d_z = total
    if HAS_DOUT:
        d_z += tl.load(d_output + step_p + row_p, mask=mask, other=0.0).to(total.dtype)
    direct = tl.zeros_like(d_z)
    d_new = d_z
    if ZONEOUT_H:
        z = _zoneout(zh, step, rows, cols, mask, zh_st, zh_sb, zh_sj, total)
        direct = z * d_z
        d_new = (1.0 - z) * d_z
    tl.store(dh_carry + row_p, tl.where(run, direct, total), mask=mask)
    d_new = tl.where(run, d_new, 0.0)
    if STORE_DHN:
        tl.store(dhn + step_p + row_p, d_new.to(dhn.dtype.element_ty), mask=mask)
    return d_new


@triton.jit(do_not_specialize=["t"])
def lstm_backward_projected(
    t, B, P, d_output, d_h_all, dh_carry, dh_gemm, dhn, zh, zh_st, zh_sb, zh_sj, rmask, lengths,
    HAS_GEMM: tl.constexpr, HAS_DOUT: tl.constexpr, HAS_DH_ALL: tl.constexpr,
    ZONEOUT_H: tl.constexpr, RMASK: tl.constexpr, LENGTHS: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """Step t with a projection: dhn[t], the gradient of W_hr y[t] (see ``h_grad``)."""
    step = t.to(tl.int64)
    rows, cols, mask = tile(B, P, BLOCK_B, BLOCK_P)
    run = running(lengths, rows, B, step, LENGTHS)
    h_grad(
        step, rows, cols, mask, run, B, P, d_output, d_h_all, dh_carry, dh_gemm, dhn,
        zh, zh_st, zh_sb, zh_sj, rmask, HAS_GEMM, HAS_DOUT, HAS_DH_ALL, ZONEOUT_H, RMASK, True,
    )  # fmt: skip


@triton.jit(do_not_specialize=["t"])
def lstm_backward_step(
    t, B, H, P,
    dy, d_output, d_h_all, dh_carry, dh_gemm, d_c_all, dc_carry, d_gates,
    gates, cell, c_all, n_hh, stats, w_ci, w_cf, w_co, ln_hh, ln_cw, ln_cb,
    zh, zh_st, zh_sb, zh_sj, zc, zc_st, zc_sb, zc_sj, rmask, lengths,
    da, dhw, dcs,
    NG: tl.constexpr, PEEPHOLE: tl.constexpr, LN_HH: tl.constexpr, LN_C: tl.constexpr,
    ZONEOUT_H: tl.constexpr, ZONEOUT_C: tl.constexpr, RMASK: tl.constexpr,
    LENGTHS: tl.constexpr, PROJ: tl.constexpr, HAS_GEMM: tl.constexpr, HAS_DOUT: tl.constexpr,
    HAS_DH_ALL: tl.constexpr, HAS_DC_ALL: tl.constexpr, HAS_DGATES: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """BPTT through step t: writes da[t] (T, B, G), the gradient of the gate pre-activations,
    dhw[t], that of W_hh h_in (through the layer norm), dcs[t] (T, B, H), that of LN(c), and
    updates dc_carry (B, H), the gradient reaching c_{t-1}. dy (B, H) is the gradient of
    o * tanh(LN(c)) with a projection; without, it comes from ``h_grad``."""
    ct = c_all.dtype.element_ty
    G = NG * H
    step, rows, cols, mask, run, k3, c3, mask3, off3, row_h = _gate_tile(
        t, B, H, lengths, NG, LENGTHS, BLOCK_B, BLOCK_H
    )

    if PROJ:
        d_h = tl.load(dy + row_h - step * B * H, mask=mask, other=0.0).to(ct)
    else:
        d_h = h_grad(
            step, rows, cols, mask, run, B, P, d_output, d_h_all, dh_carry, dh_gemm, dh_carry,
            zh, zh_st, zh_sb, zh_sj, rmask, HAS_GEMM, HAS_DOUT, HAS_DH_ALL, ZONEOUT_H, RMASK,
            False,
        )  # fmt: skip

    total_c = tl.load(dc_carry + row_h - step * B * H, mask=mask, other=0.0)
    if HAS_DC_ALL:
        total_c += tl.load(d_c_all + B * H + row_h, mask=mask, other=0.0).to(ct)
    d_c = total_c
    carry_c = tl.zeros_like(total_c)
    if ZONEOUT_C:
        z = _zoneout(zc, step, rows, cols, mask, zc_st, zc_sb, zc_sj, total_c)
        d_c = (1.0 - z) * total_c
        carry_c = z * total_c

    acts = tl.load(gates + off3, mask=mask3, other=0.0)
    i = _gate(acts, k3, 0)
    g = _gate(acts, k3, NG - 2)
    o = _gate(acts, k3, NG - 1)
    c = tl.load(c_all + row_h, mask=mask, other=0.0)
    c_new = tl.load(cell + row_h, mask=mask, other=0.0)
    shown = c_new
    if LN_C:
        mean_c = tl.load(stats + (step * B + rows) * 3 + 1, mask=rows < B, other=0.0)
        rstd_c = tl.load(stats + (step * B + rows) * 3 + 2, mask=rows < B, other=0.0)
        xhat = tl.where(mask, (c_new - mean_c[:, None]) * rstd_c[:, None], 0.0)
        wc = tl.load(ln_cw + cols, mask=cols < H, other=0.0).to(ct)[None, :]
        bc = tl.load(ln_cb + cols, mask=cols < H, other=0.0).to(ct)[None, :]
        shown = xhat * wc + bc
    tc = tanh(shown)
    d_o = d_h * tc
    d_shown = d_h * o * (1.0 - tc * tc)
    if LN_C:
        tl.store(dcs + row_h, d_shown, mask=mask)
        dxh = tl.where(mask, d_shown * wc, 0.0)
        m1 = tl.sum(dxh, 1) / H
        m2 = tl.sum(dxh * xhat, 1) / H
        d_c += rstd_c[:, None] * (dxh - m1[:, None] - xhat * m2[:, None])
    else:
        d_c += d_shown
    if HAS_DGATES:
        d_acts = tl.load(d_gates + off3, mask=mask3, other=0.0).to(ct)
        d_o += _gate(d_acts, k3, NG - 1)
    da_o = d_o * o * (1.0 - o)
    if PEEPHOLE:
        d_c += da_o * tl.load(w_co + cols, mask=cols < H, other=0.0).to(ct)[None, :]
    d_i = d_c * g
    d_g = d_c * i
    if HAS_DGATES:
        d_i += _gate(d_acts, k3, 0)
        d_g += _gate(d_acts, k3, NG - 2)
    da_i = d_i * i * (1.0 - i)
    da_g = d_g * (1.0 - g * g)
    if PEEPHOLE:
        carry_c += da_i * tl.load(w_ci + cols, mask=cols < H, other=0.0).to(ct)[None, :]
    if NG == 4:
        f = _gate(acts, k3, 1)
        d_f = d_c * c
        if HAS_DGATES:
            d_f += _gate(d_acts, k3, 1)
        da_f = d_f * f * (1.0 - f)
        carry_c += d_c * f
        if PEEPHOLE:
            carry_c += da_f * tl.load(w_cf + cols, mask=cols < H, other=0.0).to(ct)[None, :]
    else:
        carry_c += d_c
    tl.store(dc_carry + row_h - step * B * H, tl.where(run, carry_c, total_c), mask=mask)

    d3 = tl.where(k3 == 0, da_i[:, None, :], tl.where(k3 == NG - 2, da_g[:, None, :], 0.0))
    d3 = tl.where(k3 == NG - 1, da_o[:, None, :], d3)
    if NG == 4:
        d3 = tl.where(k3 == 1, da_f[:, None, :], d3)
    d3 = tl.where(mask3 & run[:, :, None], d3, 0.0)
    tl.store(da + off3, d3, mask=mask3)
    if LN_HH:
        n = tl.load(n_hh + off3, mask=mask3, other=0.0)
        rstd = tl.load(stats + (step * B + rows) * 3, mask=rows < B, other=0.0)
        dn = d3 * tl.load(ln_hh + k3 * H + c3, mask=(k3 < NG) & (c3 < H), other=0.0).to(ct)
        m1 = tl.sum(tl.sum(dn, 2), 1) / G
        m2 = tl.sum(tl.sum(dn * n, 2), 1) / G
        d3 = rstd[:, None, None] * (dn - m1[:, None, None] - n * m2[:, None, None])
    tl.store(dhw + off3, d3.to(dhw.dtype.element_ty), mask=mask3)
