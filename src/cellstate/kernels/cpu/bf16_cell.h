// The cell rows of bfloat16 LSTMs (part of lstm.cpp's translation unit), and how they save their
// gates in bfloat16 (gates_to_bf16). The forward's: lstm_cell.h's
// cell_forward_row, and hh = o tanh(c), on AVX-512 vectors whose sigmoid and tanh use an exp of
// degree 5 (activations.h's has degree 7) and divide by an approximate reciprocal (rcp14, ~14
// bits, refined by one Newton step to ~1 ulp of float32).
//
// Why: the float32 cell math (activations.h) rounds each of its five divisions per hidden unit
// exactly; in a bfloat16 forward its loop was a third of the call, much of it waiting on them
// (perf at 100x32x128x128), and an approximate reciprocal is a few times cheaper. Measured: 3-7%
// off a bfloat16 inference call; the cell was then bound by its vector instructions, and the
// shorter exp with tanh by expm1 (no small-argument polynomial) took ~10% more off inference at
// B >= 32 (BENCHMARKS.md, fourth pass). The activations stay within 2^-19 relative of the exact
// ones, 2^11 times below the bfloat16 rounding of the results, and the states stay in float32 as
// in oneDNN's bfloat16 LSTM. float32 and float64 never come here: their results stay those of
// activations.h, bit for bit. Without AVX-512 at compile time (kBF16Cell false), bfloat16 runs
// use cell_forward_row too.

#pragma once

#include <cmath>
#include <cstdint>

#include "bf16_round.h"
#include "gemm.h"
#include "lstm_cell.h"

#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace {

// The activated gates saved in bfloat16 with bfloat16 products (lstm_forward.h), and read back
// in float32 by backward. A sigmoid gate (i, f, o) above 1/2 is saved as -(1 - sigma), negative
// (-0 for sigma = 1; sigmoids are positive, exact in float32): backward multiplies by 1 - sigma,
// which then keeps bfloat16's relative precision near sigma = 1 as sigma does near 0 (saved as
// they are, bfloat16's 2^-8 spacing below 1 would leave a forget gate of 0.999 as 1). tanh's g is
// saved as it is.
inline void gates_to_bf16(const LSTMShape& s, const float* __restrict a,
                          uint16_t* __restrict out) {
  for (int64_t g0 = 0; g0 < s.G; g0 += s.H) {
    if (g0 == s.gg()) {
      round_to_bf16(a + g0, s.H, out + g0);
      continue;
    }
    for (int64_t j = g0; j < g0 + s.H; ++j) {
      out[j] = bf16_round(a[j] > 0.5f ? -(1.0f - a[j]) : a[j]);
    }
  }
}

inline void gates_from_bf16(const LSTMShape& s, const uint16_t* __restrict in,
                            float* __restrict a) {
  widen_bf16(in, s.G, a);
  for (int64_t g0 = 0; g0 < s.G; g0 += s.H) {
    if (g0 == s.gg()) continue;
    for (int64_t j = g0; j < g0 + s.H; ++j) a[j] = std::signbit(a[j]) ? 1.0f + a[j] : a[j];
  }
}

#ifdef __AVX512F__
constexpr bool kBF16Cell = true;

namespace act512 {

// a >= 0 (NaN stays NaN) as -a = n ln 2 + r, |r| <= ln 2 / 2 (ln 2 in two parts), n integral.
inline __m512 reduce_neg(__m512 a, __m512& n) {
  a = _mm512_min_ps(_mm512_set1_ps(104.0f), a);  // the second operand when a is NaN: a
  n = _mm512_roundscale_ps(_mm512_mul_ps(a, _mm512_set1_ps(-1.44269504088896341f)),
                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 r = _mm512_fnmsub_ps(n, _mm512_set1_ps(0.693359375f), a);  // -a - n ln 2
  return _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
}

// expm1(r) for |r| <= ln 2 / 2 as r (1 + r q(r)), q of degree 3 (a minimax fit of relative
// error, 2^-21): degree 5 where activations.h's exp has degree 7, as the results are rounded to
// bfloat16 (2^-8) anyway.
inline __m512 expm1_reduced(__m512 r) {
  __m512 q = _mm512_set1_ps(8.338059299e-3f);
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(4.187252372e-2f));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.666683108e-1f));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(4.999940395e-1f));
  return _mm512_mul_ps(r, _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f)));
}

// exp(-a) for a >= 0 (NaN stays NaN): 2^n (1 + expm1(r)), 2^n by vscalefps, which also rounds
// denormal results once.
inline __m512 exp_neg(__m512 a) {
  __m512 n;
  const __m512 m = expm1_reduced(reduce_neg(a, n));
  return _mm512_scalef_ps(_mm512_add_ps(m, _mm512_set1_ps(1.0f)), n);
}

// expm1(-a) for a >= 0 (NaN stays NaN): 2^n expm1(r) + (2^n - 1), exact in its last step for
// n = 0, so small a keep their relative accuracy.
inline __m512 expm1_neg(__m512 a) {
  __m512 n;
  const __m512 m = expm1_reduced(reduce_neg(a, n));
  const __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_add_ps(_mm512_scalef_ps(m, n), _mm512_sub_ps(_mm512_scalef_ps(one, n), one));
}

// 1 / d for d in [1, 2]: rcp14 and one Newton step, r (2 - d r).
inline __m512 reciprocal(__m512 d) {
  const __m512 r = _mm512_rcp14_ps(d);
  return _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));
}

// activations.h's sigmoid: e / (1 + e), e = exp(-|x|), and 1 minus it for x >= 0.
inline __m512 sigmoid(__m512 x) {
  const __m512 e = exp_neg(_mm512_abs_ps(x));
  const __m512 small = _mm512_mul_ps(e, reciprocal(_mm512_add_ps(_mm512_set1_ps(1.0f), e)));
  const __mmask16 nonnegative = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ);
  return _mm512_mask_sub_ps(small, nonnegative, _mm512_set1_ps(1.0f), small);  // NaN: small
}

// tanh(|x|) = -m / (2 + m), m = expm1(-2|x|) in (-1, 0], with the sign of x: one formula for
// all x (activations.h has a polynomial below |x| = 0.625), relatively accurate near 0 as m is.
inline __m512 tanh(__m512 x) {
  const __m512 ax = _mm512_abs_ps(x);
  const __m512 m = expm1_neg(_mm512_add_ps(ax, ax));
  const __m512 t = _mm512_mul_ps(m, reciprocal(_mm512_add_ps(_mm512_set1_ps(2.0f), m)));
  // x's sign bit with t's other bits (t <= 0; NaN stays NaN)
  return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(
    _mm512_castps_si512(t), _mm512_castps_si512(x), _mm512_set1_epi32(INT32_MIN), 0xD8));
}

// A sigmoid gate as gates_to_bf16 saves it (before rounding): above 1/2 as -(1 - sigma)
inline __m512 saved_sigmoid(__m512 sigma) {
  const __m512 complement = _mm512_xor_ps(_mm512_sub_ps(_mm512_set1_ps(1.0f), sigma),
                                          _mm512_set1_ps(-0.0f));
  const __mmask16 high = _mm512_cmp_ps_mask(sigma, _mm512_set1_ps(0.5f), _CMP_GT_OQ);
  return _mm512_mask_blend_ps(high, sigma, complement);
}

}  // namespace act512

// cell_forward_row (same arguments, same results up to the reciprocals' error), and with hh
// (not null) also hh = o tanh(c_new), with saved (not null) also the gates saved in bfloat16
// as gates_to_bf16 does, in the same pass. The activated gates are stored back into a only
// with keep_gates (records and layer norm on c read them there): a bfloat16 training forward
// saves the bfloat16 ones. NATIVE: rounded by AVX512-BF16 (bf16_round.h).
template <bool FG, bool PEEP, bool NATIVE>
[[gnu::always_inline]] inline void cell_row_bf16(const LSTMShape& s, const LSTMParams<float>& q,
                                                 const float* bias, float* a,
                                                 const float* c_prev, float* c_new, float* hh,
                                                 uint16_t* saved, bool keep_gates) {
  const int64_t H = s.H;
  float* ai = a + s.gi();
  float* af = a + s.gf();
  float* ag = a + s.gg();
  float* ao = a + s.go();
  const float* bi = bias + s.gi();
  const float* bf = bias + s.gf();
  const float* bg = bias + s.gg();
  const float* bo = bias + s.go();
  for (int64_t j = 0; j < H; j += 16) {
    const __mmask16 k = H - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (H - j)) - 1);
    auto load = [&](const float* p) { return _mm512_maskz_loadu_ps(k, p + j); };
    auto store = [&](float* p, __m512 v) { _mm512_mask_storeu_ps(p + j, k, v); };
    auto save = [&](int64_t gate, __m512 v) {
      _mm256_mask_storeu_epi16(saved + gate + j, k,
                               NATIVE ? bf16x16::native(v) : bf16x16::round(v));
    };
    const __m512 cp = load(c_prev);
    __m512 pre_i = _mm512_add_ps(load(ai), load(bi));
    __m512 pre_o = _mm512_add_ps(load(ao), load(bo));
    if constexpr (PEEP) pre_i = _mm512_fmadd_ps(load(q.w_ci), cp, pre_i);
    const __m512 i = act512::sigmoid(pre_i);
    const __m512 g = act512::tanh(_mm512_add_ps(load(ag), load(bg)));
    __m512 c;
    if constexpr (FG) {
      __m512 pre_f = _mm512_add_ps(load(af), load(bf));
      if constexpr (PEEP) pre_f = _mm512_fmadd_ps(load(q.w_cf), cp, pre_f);
      const __m512 f = act512::sigmoid(pre_f);
      if (keep_gates) store(af, f);
      if (saved) save(s.gf(), act512::saved_sigmoid(f));
      c = _mm512_fmadd_ps(f, cp, _mm512_mul_ps(i, g));
    } else {
      c = _mm512_fmadd_ps(i, g, cp);  // the constant error carousel of 1997
    }
    if constexpr (PEEP) pre_o = _mm512_fmadd_ps(load(q.w_co), c, pre_o);
    const __m512 o = act512::sigmoid(pre_o);
    if (keep_gates) {
      store(ai, i);
      store(ag, g);
      store(ao, o);
    }
    store(c_new, c);
    if (hh) store(hh, _mm512_mul_ps(o, act512::tanh(c)));
    if (saved) {
      save(s.gi(), act512::saved_sigmoid(i));
      save(s.gg(), g);
      save(s.go(), act512::saved_sigmoid(o));
    }
  }
}

// cell_row_bf16, its bfloat16 rounding on AVX512-BF16 with native (native_bf16())
template <bool FG, bool PEEP>
inline void cell_forward_row_bf16(const LSTMShape& s, const LSTMParams<float>& q,
                                  const float* bias, float* a, const float* c_prev, float* c_new,
                                  float* hh, uint16_t* saved, bool keep_gates, bool native) {
  if (native) {
    cell_row_bf16<FG, PEEP, true>(s, q, bias, a, c_prev, c_new, hh, saved, keep_gates);
    return;
  }
  cell_row_bf16<FG, PEEP, false>(s, q, bias, a, c_prev, c_new, hh, saved, keep_gates);
}

// lstm_cell.h's gate_backward_row (same arguments, same results up to rounding) on AVX-512
// vectors: g++ leaves that loop scalar (perf: it was most of the bfloat16 backward's step loop).
template <bool FG, bool PEEP>
inline void gate_backward_row_bf16(const LSTMShape& s, const LSTMParams<float>& q,
                                   const float* a, const float* c_prev, const float* c_new,
                                   const float* dcs, const float* z, const float* rec_c,
                                   const float* rec_i, const float* rec_f, const float* rec_g,
                                   float* dc, float* da, float* peep_acc) {
  const int64_t H = s.H;
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t j = 0; j < H; j += 16) {
    const __mmask16 k = H - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (H - j)) - 1);
    auto load = [&](const float* p) { return _mm512_maskz_loadu_ps(k, p + j); };
    auto store = [&](float* p, __m512 v) { _mm512_mask_storeu_ps(p + j, k, v); };
    auto add_to = [&](float* p, __m512 v) { store(p, _mm512_add_ps(load(p), v)); };
    const __m512 gi = load(a + s.gi()), gg = load(a + s.gg()), zj = load(z);
    const __m512 dcz = _mm512_add_ps(load(dc), load(rec_c));  // d c_t after zoneout
    __m512 dcn = _mm512_fmadd_ps(_mm512_sub_ps(one, zj), dcz, load(dcs));
    if constexpr (PEEP) dcn = _mm512_fmadd_ps(load(da + s.go()), load(q.w_co), dcn);
    const __m512 da_i = _mm512_mul_ps(_mm512_mul_ps(_mm512_fmadd_ps(dcn, gg, load(rec_i)), gi),
                                      _mm512_sub_ps(one, gi));
    store(da + s.gi(), da_i);
    store(da + s.gg(), _mm512_mul_ps(_mm512_fmadd_ps(dcn, gi, load(rec_g)),
                                     _mm512_fnmadd_ps(gg, gg, one)));
    __m512 dcp = _mm512_mul_ps(zj, dcz);
    if constexpr (FG) {
      const __m512 gf = load(a + s.gf()), cp = load(c_prev);
      const __m512 da_f = _mm512_mul_ps(
        _mm512_mul_ps(_mm512_fmadd_ps(dcn, cp, load(rec_f)), gf), _mm512_sub_ps(one, gf));
      store(da + s.gf(), da_f);
      dcp = _mm512_fmadd_ps(dcn, gf, dcp);
      if constexpr (PEEP) {
        dcp = _mm512_fmadd_ps(da_f, load(q.w_cf), dcp);
        add_to(peep_acc + H, _mm512_mul_ps(da_f, cp));
      }
    } else {
      dcp = _mm512_add_ps(dcp, dcn);
    }
    if constexpr (PEEP) {
      dcp = _mm512_fmadd_ps(da_i, load(q.w_ci), dcp);
      add_to(peep_acc, _mm512_mul_ps(da_i, load(c_prev)));
      add_to(peep_acc + 2 * H, _mm512_mul_ps(load(da + s.go()), load(c_new)));
    }
    store(dc, dcp);
  }
}

// sigmoid[k] = sigmoid(x[k]), tanh[k] = tanh(x[k]) for k < n, by act512 (tests).
inline void activations_bf16(const float* x, int64_t n, float* sigmoid, float* tanh) {
  for (int64_t k = 0; k < n; k += 16) {
    const __mmask16 m = n - k >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - k)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + k);
    _mm512_mask_storeu_ps(sigmoid + k, m, act512::sigmoid(v));
    _mm512_mask_storeu_ps(tanh + k, m, act512::tanh(v));
  }
}

#else
constexpr bool kBF16Cell = false;

inline void activations_bf16(const float*, int64_t, float*, float*) {}

template <bool FG, bool PEEP>
inline void gate_backward_row_bf16(const LSTMShape&, const LSTMParams<float>&, const float*,
                                   const float*, const float*, const float*, const float*,
                                   const float*, const float*, const float*, const float*,
                                   float*, float*, float*) {}

template <bool FG, bool PEEP>
inline void cell_forward_row_bf16(const LSTMShape&, const LSTMParams<float>&, const float*,
                                  float*, const float*, float*, float*, uint16_t*, bool, bool) {}
#endif

}  // namespace
