// The LSTM's shape, parameters and per-row cell math, forward and backward (part of lstm.cpp's
// translation unit; lstm_forward.h and lstm_backward.h run them over rows and steps). The
// equations are those of kernels/reference.py.

#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <type_traits>

#include "activations.h"
#include "entry_points.h"  // LSTMTensors
#include "runtime.h"

namespace {

struct LSTMShape {
  int64_t T, B, D, H, P, G;
  bool forget_gate;
  int64_t gi() const { return 0; }
  int64_t gf() const { return H; }  // only with a forget gate
  int64_t gg() const { return (forget_gate ? 2 : 1) * H; }
  int64_t go() const { return (forget_gate ? 3 : 2) * H; }
};

// x (T, B, D), w_ih (G, D), w_hh (G, P); G = 4H, or 3H without a forget gate.
inline LSTMShape lstm_shape(const Tensor& x, const Tensor& w_ih, const Tensor& w_hh,
                            bool forget_gate) {
  const int64_t G = w_ih.size(0);
  const int64_t H = G / (forget_gate ? 4 : 3);
  return LSTMShape{x.size(0), x.size(1), x.size(2), H, w_hh.size(1), G, forget_gate};
}

// Layer-norm statistics saved per row: (mean, rstd) of W_ih x, rstd of W_hh h, (mean, rstd) of c.
enum Stat { kMeanIH, kRstdIH, kRstdHH, kMeanC, kRstdC, kStats };

template <typename T>
struct LSTMParams {
  const T* w_ih;                             // (G, D)
  const T* w_hr;                             // (P, H) or null
  const T *w_ci, *w_cf, *w_co;               // (H,) peepholes or null
  const T *ln_ih, *ln_hh, *ln_c_w, *ln_c_b;  // layer-norm gains (G, G, H) and bias (H) or null
};

// With bfloat16 products the matrices come in bfloat16: held in float32 (exactly: bfloat16
// values) for the float32 kernel, which rounds them back to bfloat16 for its products (gemm.h).
// w_hr always; w_ih and w_hh unless the forward packs them from bfloat16 (stacked_bf16).
inline void matrices_to_float(LSTMTensors& p, bool w_ih_hh) {
  if (w_ih_hh) {
    p.w_ih = p.w_ih.to(at::kFloat);
    p.w_hh = p.w_hh.to(at::kFloat);
  }
  if (p.w_hr) p.w_hr = p.w_hr->to(at::kFloat);
}

// q.w_ih is null where w_ih is not of type T (bfloat16, read by the forward's stacked panels).
template <typename T>
LSTMParams<T> lstm_params(LSTMTensors& p) {
  LSTMParams<T> q;
  p.w_ih = p.w_ih.contiguous();
  p.w_hh = p.w_hh.contiguous();
  for (OptTensor* t : {&p.b_ih, &p.b_hh, &p.w_hr, &p.w_ci, &p.w_cf, &p.w_co, &p.ln_ih, &p.ln_hh,
                       &p.ln_c_weight, &p.ln_c_bias}) {
    *t = contiguous(*t);
  }
  q.w_ih = p.w_ih.scalar_type() == c10::CppTypeToScalarType<T>::value ? p.w_ih.data_ptr<T>()
                                                                       : nullptr;
  q.w_hr = ptr<T>(p.w_hr);
  q.w_ci = ptr<T>(p.w_ci);
  q.w_cf = ptr<T>(p.w_cf);
  q.w_co = ptr<T>(p.w_co);
  q.ln_ih = ptr<T>(p.ln_ih);
  q.ln_hh = ptr<T>(p.ln_hh);
  q.ln_c_w = ptr<T>(p.ln_c_weight);
  q.ln_c_b = ptr<T>(p.ln_c_bias);
  return q;
}

// The per-row functions below are always_inline: they are the bodies of the step loops' row
// loops, which vectorise only if inlined whole (g++ left some as calls as the loops grew).

// Runs f with compile-time flags for the two variants that change the gate loop itself, so
// that each combination gets its own branch-free, vectorised loop.
template <typename F>
void with_cell(bool forget_gate, bool peephole, F&& f) {
  using std::integral_constant;
  if (forget_gate) {
    if (peephole) f(integral_constant<bool, true>{}, integral_constant<bool, true>{});
    else f(integral_constant<bool, true>{}, integral_constant<bool, false>{});
  } else {
    if (peephole) f(integral_constant<bool, false>{}, integral_constant<bool, true>{});
    else f(integral_constant<bool, false>{}, integral_constant<bool, false>{});
  }
}

// One row of the cell: a (G) pre-activations without bias -> activated gates, in place;
// c_new = f c_prev + i g. bias: b_ih + b_hh (G).
template <typename T, bool FG, bool PEEP>
[[gnu::always_inline]]
inline void cell_forward_row(const LSTMShape& s, const LSTMParams<T>& q, const T* bias,
                             T* __restrict a, const T* __restrict c_prev, T* __restrict c_new) {
  const int64_t H = s.H;
  T* __restrict ai = a + s.gi();
  T* __restrict af = a + s.gf();
  T* __restrict ag = a + s.gg();
  T* __restrict ao = a + s.go();
  const T* __restrict bi = bias + s.gi();
  const T* __restrict bf = bias + s.gf();
  const T* __restrict bg = bias + s.gg();
  const T* __restrict bo = bias + s.go();
  const T* __restrict w_ci = q.w_ci;
  const T* __restrict w_cf = q.w_cf;
  const T* __restrict w_co = q.w_co;
  for (int64_t j = 0; j < H; ++j) {
    const T cp = c_prev[j];
    const T i = act::sigmoid(ai[j] + bi[j] + (PEEP ? w_ci[j] * cp : T(0)));
    const T g = act::tanh(ag[j] + bg[j]);
    T c;
    if constexpr (FG) {
      const T f = act::sigmoid(af[j] + bf[j] + (PEEP ? w_cf[j] * cp : T(0)));
      af[j] = f;
      c = f * cp + i * g;
    } else {
      c = cp + i * g;  // the constant error carousel of 1997
    }
    const T o = act::sigmoid(ao[j] + bo[j] + (PEEP ? w_co[j] * c : T(0)));
    ai[j] = i;
    ag[j] = g;
    ao[j] = o;
    c_new[j] = c;
  }
}

// A zoneout input: a 0/1 mask (T, B, X), or a 0-dim probability (evaluation), or absent.
template <typename T>
struct Zoneout {
  const T* data = nullptr;
  int64_t step = 0;  // elements per step (0 for the scalar, whose row is expanded)
  Tensor storage;

  Zoneout(const OptTensor& z, int64_t B, int64_t X) {
    if (!z.has_value() || !z->defined()) return;
    if (z->dim() == 0) {
      storage = z->expand({B, X}).contiguous();  // one row per sequence, the same at every step
    } else {
      storage = z->contiguous();
      step = B * X;
    }
    data = storage.data_ptr<T>();
  }
  explicit operator bool() const { return data != nullptr; }
  const T* row(int64_t t, int64_t b, int64_t X) const { return data + t * step + b * X; }
};

// dh_t through zoneout: keep = z dh (to h_{t-1}), dhn = (1 - z) dh (to h~_t); dh includes the
// output's gradient.
template <typename T>
[[gnu::always_inline]]
inline void zoneout_backward_row(int64_t P, const T* __restrict dh, const T* __restrict dout,
                                 const T* __restrict z, T* __restrict keep, T* __restrict dhn) {
  for (int64_t j = 0; j < P; ++j) {
    const T d = dh[j] + dout[j];
    keep[j] = z[j] * d;
    dhn[j] = (T(1) - z[j]) * d;
  }
}

// Through h~ = o tanh(c_shown): hh = o tanh(c_shown) (for W_hr's gradient), d a_o, and dcs,
// the gradient of c_shown.
template <typename T>
[[gnu::always_inline]]
inline void output_backward_row(int64_t H, const T* __restrict c_shown, const T* __restrict o,
                                const T* __restrict dhh, const T* __restrict drec_o,
                                T* __restrict hh, T* __restrict da_o, T* __restrict dcs) {
  for (int64_t j = 0; j < H; ++j) {
    const T th = act::tanh(c_shown[j]);
    hh[j] = o[j] * th;
    const T d_o = dhh[j] * th + drec_o[j];
    da_o[j] = d_o * o[j] * (T(1) - o[j]);
    dcs[j] = dhh[j] * o[j] * (T(1) - th * th);
  }
}

// Through the cell: dcs is d c~_t via h, dc (in: d c_t, out: d c_{t-1}); writes d a_i, d a_f,
// d a_g (d a_o is already in da) and accumulates the peephole gradients.
template <typename T, bool FG, bool PEEP>
[[gnu::always_inline]]
inline void gate_backward_row(const LSTMShape& s, const LSTMParams<T>& q, const T* a,
                              const T* __restrict c_prev, const T* __restrict c_new,
                              const T* __restrict dcs, const T* __restrict z,
                              const T* __restrict rec_c, const T* __restrict rec_i,
                              const T* __restrict rec_f, const T* __restrict rec_g,
                              T* __restrict dc, T* da, T* peep_acc) {
  const int64_t H = s.H;
  const T* __restrict gi = a + s.gi();
  const T* __restrict gf = a + s.gf();
  const T* __restrict gg = a + s.gg();
  T* __restrict dai = da + s.gi();
  T* __restrict daf = da + s.gf();
  T* __restrict dag = da + s.gg();
  const T* __restrict dao = da + s.go();
  const T* __restrict w_ci = q.w_ci;
  const T* __restrict w_cf = q.w_cf;
  const T* __restrict w_co = q.w_co;
  T* __restrict dw_ci = peep_acc;
  T* __restrict dw_cf = peep_acc + H;
  T* __restrict dw_co = peep_acc + 2 * H;
  for (int64_t j = 0; j < H; ++j) {
    const T dcz = dc[j] + rec_c[j];  // d c_t after zoneout
    T dcn = (T(1) - z[j]) * dcz + dcs[j];
    if constexpr (PEEP) dcn += dao[j] * w_co[j];
    const T da_i = (dcn * gg[j] + rec_i[j]) * gi[j] * (T(1) - gi[j]);
    dai[j] = da_i;
    dag[j] = (dcn * gi[j] + rec_g[j]) * (T(1) - gg[j] * gg[j]);
    T dcp = z[j] * dcz;
    if constexpr (FG) {
      const T da_f = (dcn * c_prev[j] + rec_f[j]) * gf[j] * (T(1) - gf[j]);
      daf[j] = da_f;
      dcp += dcn * gf[j];
      if constexpr (PEEP) {
        dcp += da_f * w_cf[j];
        dw_cf[j] += da_f * c_prev[j];
      }
    } else {
      dcp += dcn;
    }
    if constexpr (PEEP) {
      dcp += da_i * w_ci[j];
      dw_ci[j] += da_i * c_prev[j];
      dw_co[j] += dao[j] * c_new[j];
    }
    dc[j] = dcp;
  }
}

}  // namespace
