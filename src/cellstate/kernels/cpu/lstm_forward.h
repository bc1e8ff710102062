// The LSTM forward (part of lstm.cpp's translation unit, so that the per-row phases inline into
// the step loop): one layer, one direction, the whole padded sequence in one call.
//
// Each step, on the rows [b0, b1) a thread owns (all rows, split per phase, when the schedule
// runs the steps in order): the input projection and the recurrent product, their layer norms,
// the cell, the output projection, then zoneout, lengths, the output and the records.

#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <vector>

#include "bf16_cell.h"
#include "gemm.h"
#include "layer_norm.h"
#include "lstm_cell.h"
#include "runtime.h"

namespace {

// What only the forward multiplies by: W_ih^T (D, G), W_hh^T (P, G) and W_hr^T (H, P), for the
// per-step GEMMs (rows times weight), and the fused bias b_ih + b_hh (G; zeros without biases).
// With stacked bfloat16 panels (packed from w_ih and w_hh themselves) no W_ih^T and W_hh^T.
struct ForwardWeights {
  Tensor w_ih_t, w_hh_t, w_hr_t, bias;

  ForwardWeights(const LSTMTensors& p, const LSTMShape& s, const Tensor& like, bool stacked)
      : w_ih_t(stacked ? Tensor() : p.w_ih.t().contiguous()),
        w_hh_t(stacked ? Tensor() : p.w_hh.t().contiguous()),
        w_hr_t(p.w_hr ? p.w_hr->t().contiguous() : Tensor()),
        bias(at::zeros({s.G}, like.options())) {
    if (p.b_ih) bias += *p.b_ih;
    if (p.b_hh) bias += *p.b_hh;
  }
};

// One forward call's inputs, buffers (pointers at step 0, row 0) and per-row phases. The phases
// are the step loop's body cut into named pieces: always_inline, so that they compile as that
// loop did (g++ would keep the larger ones as calls).
template <typename T, bool FG, bool PEEP>
struct LSTMForward {
  const LSTMShape& s;
  const LSTMParams<T>& q;
  const Schedule& schedule;
  const PackedWeight<T>& w_ih_t;
  const PackedWeight<T>& w_hh_t;
  const PackedWeight<T>& w_hr_t;
  // W_ih^T over W_hh^T (D + P, G) in bfloat16 panels, for [x_t h_{t-1}] times it in one product
  // (bfloat16 products without layer norm; else not packed)
  const PackedWeight<T>& w_xh_t;
  const T* bias;           // (G) b_ih + b_hh
  const Zoneout<T>& zh;    // on h (B, P) per step
  const Zoneout<T>& zc;    // on c (B, H) per step
  const T* mask;           // (B, P) recurrent dropout, or null
  const int64_t* lengths;  // (B), or null
  bool save;               // keep every step's gates, cells and statistics for backward
  const T* x;              // (T, B, D), or null with x16
  const uint16_t* x16;     // (T, B, D) x in bfloat16 (stacked bfloat16 panels only), or null
  T* gates;                // (T or 1, B, G): pre-activations, then activated gates
  uint16_t* gates16;       // (T, B, G): the activated gates in bfloat16 (save with bfloat16
                           // products; gates is then one step), or null
  T* cells;                // (T or 1, B, H): c~_t, the cell before zoneout
  T* c_states;             // (T, B, H): c_t after zoneout (save, zoneout on c), or null
  T* ln_hw;                // (T or 1, B, G): normalised W_hh h, or null
  T* stats;                // (T or 1, B, kStats), or null
  T* records;              // (5, T, B, H): c, i, f, g, o, or null
  T* out;                  // (T, B, P), or null with out16
  uint16_t* out16;         // (T, B, P) the output in bfloat16 (T float only), or null
  T* h;                    // (B, P): the running state h_{t-1}, then h_t
  T* c;                    // (B, H): the running state c_{t-1}, then c_t
  T* h_in;                 // (B, P): h_{t-1} masked (h itself without a mask)
  T* hh;                   // (B, H): o tanh(c), before the projection
  T* h_new;                // (B, P): h~_t before zoneout (hh itself without a projection)
  bool bf16_cell;          // bfloat16 products: the cell on bf16_cell.h's vectorised math
  bool native_bf16;        // and its bfloat16 rounding on AVX512-BF16 (bf16_round.h)

  // Saved tensors are indexed by step; their single-step scratch versions by step 0.
  int64_t at_step(int64_t t) const { return save ? t : 0; }
  T* gates_row(int64_t t, int64_t b) const {
    return gates + ((gates16 ? 0 : at_step(t)) * s.B + b) * s.G;
  }
  T* stats_row(int64_t t, int64_t b) const { return stats + (at_step(t) * s.B + b) * kStats; }

  template <typename Rows>
  [[gnu::always_inline]] void step(int64_t t, int64_t b0, int64_t b1, Rows& rows) const {
    const int64_t B = s.B, D = s.D, P = s.P, G = s.G, H = s.H;
    T* a_t = gates_row(t, 0);
    const T* x_t = x ? x + t * B * D : nullptr;
    if (mask) {
      for (int64_t k = b0 * P; k < b1 * P; ++k) h_in[k] = h[k] * mask[k];
    }
    // The input projection is computed with the recurrent GEMM, on the same rows and weight
    // panels (rather than one whole-sequence GEMM up front): no (T, B, G) pass through memory in
    // inference, and no BLAS call while the other threads wait. Layer norm normalises each one.
    // With bfloat16 products (and no layer norm) both are one product on the stacked weights:
    // one brgemm kernel per step instead of two alternating ones (each switch reloads the tile
    // configuration), half the calls.
    if (q.ln_ih || q.ln_hh) {
      schedule.gemm(b0, b1, w_ih_t, x_t, D, false, a_t, G);
      if (q.ln_ih) rows(b0, b1, [&](int64_t b) { input_layer_norm_row(t, b); });
      if (q.ln_hh) {
        schedule.gemm(b0, b1, w_hh_t, h_in, P, false, ln_hw + at_step(t) * B * G, G);
        rows(b0, b1, [&](int64_t b) { recurrent_layer_norm_row(t, b); });
      } else {
        schedule.gemm(b0, b1, w_hh_t, h_in, P, true, a_t, G);
      }
    } else if (w_xh_t.bf16_packed()) {
      if constexpr (std::is_same_v<T, float>) {  // a = [x_t h_{t-1}] [W_ih^T; W_hh^T]
        if (x16) {
          schedule.gemm_stacked(b0, b1, w_xh_t, x16 + t * B * D, D, D, h_in, P, a_t, G);
        } else {
          schedule.gemm_stacked(b0, b1, w_xh_t, x_t, D, D, h_in, P, a_t, G);
        }
      }
    } else {
      // a = W_ih x_t + W_hh h_{t-1}
      schedule.gemm_sum(b0, b1, w_ih_t, x_t, D, w_hh_t, h_in, P, a_t, G);
    }
    rows(b0, b1, [&](int64_t b) { cell_row(t, b); });
    if (q.w_hr) schedule.gemm(b0, b1, w_hr_t, hh, H, false, h_new, P);
    rows(b0, b1, [&](int64_t b) {
      state_row(t, b);
      if (records) record_row(t, b);
    });
  }

  // a = LN(W_ih x) ln_ih
  [[gnu::always_inline]] void input_layer_norm_row(int64_t t, int64_t b) const {
    const int64_t G = s.G;
    T* a = gates_row(t, b);
    const RowNorm<T> norm = row_norm(a, G);
    for (int64_t j = 0; j < G; ++j) a[j] = norm.xhat(a[j]) * q.ln_ih[j];
    T* st = stats_row(t, b);
    st[kMeanIH] = norm.mean;
    st[kRstdIH] = norm.rstd;
  }

  // a += LN(W_hh h) ln_hh, keeping the normalised W_hh h for backward.
  [[gnu::always_inline]] void recurrent_layer_norm_row(int64_t t, int64_t b) const {
    if (!valid(lengths, t, b)) return;
    const int64_t G = s.G;
    T* hw = ln_hw + (at_step(t) * s.B + b) * G;
    T* a = gates_row(t, b);
    const RowNorm<T> norm = row_norm(hw, G);
    for (int64_t j = 0; j < G; ++j) {
      hw[j] = norm.xhat(hw[j]);
      a[j] += q.ln_hh[j] * hw[j];
    }
    stats_row(t, b)[kRstdHH] = norm.rstd;
  }

  // The gates, c~_t and hh = o tanh(c~_t), or o tanh(LN(c~_t)).
  [[gnu::always_inline]] void cell_row(int64_t t, int64_t b) const {
    const int64_t H = s.H;
    T* hh_b = hh + b * H;
    if (!valid(lengths, t, b)) {
      std::fill(hh_b, hh_b + H, T(0));  // keeps the projection GEMM finite
      if (gates16) std::fill_n(gates16 + (t * s.B + b) * s.G, s.G, uint16_t(0));
      return;
    }
    T* a = gates_row(t, b);
    T* c_new = cells + (at_step(t) * s.B + b) * H;
    uint16_t* saved = gates16 ? gates16 + (t * s.B + b) * s.G : nullptr;
    if constexpr (std::is_same_v<T, float>) {
      if (bf16_cell) {  // and hh (without layer norm on c) and the saved gates in the same pass
        cell_forward_row_bf16<FG, PEEP>(s, q, bias, a, c + b * H, c_new,
                                        q.ln_c_w ? nullptr : hh_b, saved,
                                        records || q.ln_c_w, native_bf16);
        if (!q.ln_c_w) return;
      }
    }
    if (!bf16_cell) {
      cell_forward_row<T, FG, PEEP>(s, q, bias, a, c + b * H, c_new);
      if constexpr (std::is_same_v<T, float>) {
        if (saved) gates_to_bf16(s, a, saved);
      }
    }
    const T* o = a + s.go();
    if (q.ln_c_w) {
      const RowNorm<T> norm = row_norm(c_new, H);
      for (int64_t j = 0; j < H; ++j) {
        hh_b[j] = o[j] * act::tanh(affine(norm.xhat(c_new[j]), q.ln_c_w, q.ln_c_b, j));
      }
      T* st = stats_row(t, b);
      st[kMeanC] = norm.mean;
      st[kRstdC] = norm.rstd;
    } else {
      for (int64_t j = 0; j < H; ++j) hh_b[j] = o[j] * act::tanh(c_new[j]);
    }
  }

  // h_t and c_t through zoneout (or kept at a finished sequence's last step), and the output.
  [[gnu::always_inline]] void state_row(int64_t t, int64_t b) const {
    const int64_t P = s.P, H = s.H;
    const int64_t out_row = (t * s.B + b) * P;
    if (!valid(lengths, t, b)) {
      if (out16) {
        std::fill(out16 + out_row, out16 + out_row + P, uint16_t(0));
      } else {
        std::fill(out + out_row, out + out_row + P, T(0));
      }
      return;
    }
    T* h_b = h + b * P;
    const T* h_new_b = h_new + b * P;
    if (zh) {
      const T* z = zh.row(t, b, P);
      for (int64_t j = 0; j < P; ++j) h_b[j] = z[j] * h_b[j] + (T(1) - z[j]) * h_new_b[j];
    } else {
      std::copy(h_new_b, h_new_b + P, h_b);
    }
    if constexpr (std::is_same_v<T, float>) {
      if (out16) round_to_bf16(h_b, P, out16 + out_row);  // as h_b.to(bfloat16) rounds
    }
    if (!out16) std::copy(h_b, h_b + P, out + out_row);
    T* c_b = c + b * H;
    const T* c_new = cells + (at_step(t) * s.B + b) * H;
    if (zc) {
      const T* z = zc.row(t, b, H);
      for (int64_t j = 0; j < H; ++j) c_b[j] = z[j] * c_b[j] + (T(1) - z[j]) * c_new[j];
      if (c_states) std::copy(c_b, c_b + H, c_states + (t * s.B + b) * H);
    } else {
      std::copy(c_new, c_new + H, c_b);
    }
  }

  // records[:, t, b] = c_t, i, f (1 without a forget gate), g, o; zeros past the end.
  [[gnu::always_inline]] void record_row(int64_t t, int64_t b) const {
    const int64_t H = s.H, TBH = s.T * s.B * H;
    const int64_t row = (t * s.B + b) * H;
    T* rec_c = records + row;
    T* rec_i = records + TBH + row;
    T* rec_f = records + 2 * TBH + row;
    T* rec_g = records + 3 * TBH + row;
    T* rec_o = records + 4 * TBH + row;
    if (!valid(lengths, t, b)) {
      for (T* r : {rec_c, rec_i, rec_f, rec_g, rec_o}) std::fill(r, r + H, T(0));
      return;
    }
    const T* a = gates_row(t, b);
    std::copy(c + b * H, c + (b + 1) * H, rec_c);
    std::copy(a + s.gi(), a + s.gi() + H, rec_i);
    if (FG) {
      std::copy(a + s.gf(), a + s.gf() + H, rec_f);
    } else {
      std::fill(rec_f, rec_f + H, T(1));
    }
    std::copy(a + s.gg(), a + s.gg() + H, rec_g);
    std::copy(a + s.go(), a + s.go() + H, rec_o);
  }
};

// bf16 (T float): bfloat16 products. Then w_ih, w_hh and w_hr come in bfloat16, the other
// tensors in float32, except x, which may be bfloat16: the kernel then reads it in bfloat16
// (or makes a float32 copy) and returns the output in bfloat16, as x.to(float32) and
// output.to(bfloat16) would, without the two whole-sequence copies.
template <typename T>
std::vector<Tensor> lstm_forward_impl(const Tensor& x_, const Tensor& h0, const Tensor& c0,
                                      LSTMTensors& tensors, const OptTensor& zoneout_h,
                                      const OptTensor& zoneout_c, const OptTensor& mask_,
                                      const OptTensor& lengths_, bool forget_gate,
                                      bool return_states, bool save, bool bf16) {
  const Tensor x_in = x_.contiguous();
  const LSTMShape s = lstm_shape(x_in, tensors.w_ih, tensors.w_hh, forget_gate);
  const auto [T_, B, D, H, P, G] = std::tuple{s.T, s.B, s.D, s.H, s.P, s.G};
  // bfloat16 products without layer norm: one product per step, on the stacked weights
  PackedWeight<T> w_xh_t;
  if (bf16 && !present(tensors.ln_ih) && !present(tensors.ln_hh)) {
    w_xh_t = PackedWeight<T>::stacked_bf16(tensors.w_ih, tensors.w_hh, B);
  }
  const bool stacked = w_xh_t.bf16_packed();
  if (bf16) matrices_to_float(tensors, !stacked);
  const LSTMParams<T> q = lstm_params<T>(tensors);
  const Tensor like = at::empty({0}, x_in.options().dtype(c10::CppTypeToScalarType<T>::value));
  const bool x_bf16 = x_in.scalar_type() == at::kBFloat16;
  const Tensor x = x_bf16 && !stacked ? x_in.to(at::kFloat) : x_in;
  const ForwardWeights weights(tensors, s, like, stacked);
  const bool proj = q.w_hr != nullptr;
  const bool any_ln = q.ln_ih || q.ln_hh || q.ln_c_w;
  const Zoneout<T> zh(zoneout_h, B, P), zc(zoneout_c, B, H);
  const OptTensor mask_c = contiguous(mask_);
  const T* mask = ptr<T>(mask_c);
  const OptTensor lengths_c = contiguous(lengths_);
  const int64_t* lengths = lengths_c ? lengths_c->data_ptr<int64_t>() : nullptr;

  Tensor output = empty_like_shape(x_bf16 ? x_in : like, {T_, B, P});
  Tensor h_n = h0.contiguous().clone();  // (B, P): the running state, updated in place
  Tensor c_n = c0.contiguous().clone();  // (B, H)
  // Every step's gates, cells and statistics with save (backward needs them), else one reused,
  // cache-resident step. With bfloat16 products the saved gates are bfloat16 (as oneDNN's
  // bfloat16 LSTM keeps them; bf16_cell.h: gates_to_bf16), rounded from one cache-resident
  // float32 step: half the bytes written here and read by backward.
  const bool gates_bf16 = save && bf16;
  const Tensor like16 = at::empty({0}, like.options().dtype(at::kBFloat16));
  Tensor gates = saved_empty(like, {save && !gates_bf16 ? T_ : 1, B, G});
  Tensor gates16 = gates_bf16 ? saved_empty(like16, {T_, B, G}) : none_tensor(like);
  Tensor cells = save ? saved_empty(like, {T_, B, H}) : empty_like_shape(like, {B, H});
  Tensor c_states = save && zc ? saved_empty(like, {T_, B, H}) : none_tensor(like);
  Tensor ln_hw = q.ln_hh ? saved_empty(like, {save ? T_ : 1, B, G}) : none_tensor(like);
  Tensor ln_stats = any_ln ? empty_like_shape(like, {save ? T_ : 1, B, kStats}) : none_tensor(like);
  Tensor records = return_states ? saved_empty(like, {5, T_, B, H}) : none_tensor(like);
  Tensor hh_buf = proj ? empty_like_shape(like, {B, H}) : none_tensor(like);
  Tensor h_new_buf = empty_like_shape(like, {B, P});
  Tensor h_in_buf = mask ? empty_like_shape(like, {B, P}) : none_tensor(like);

  const Schedule schedule(B, G * (D + P), G * (D + P) + (proj ? H * P : 0) + 20 * H, 20 * H,
                          bf16);
  const PackedWeight<T> w_ih_t =
    stacked ? PackedWeight<T>() : PackedWeight<T>(weights.w_ih_t, B, bf16);
  const PackedWeight<T> w_hh_t =
    stacked ? PackedWeight<T>() : PackedWeight<T>(weights.w_hh_t, B, bf16);
  const PackedWeight<T> w_hr_t =
    proj ? PackedWeight<T>(weights.w_hr_t, B, bf16) : PackedWeight<T>();
  with_cell(forget_gate, q.w_ci != nullptr, [&](auto FG_, auto PEEP_) {
    T* h_p = h_n.data_ptr<T>();
    T* h_new_p = h_new_buf.data_ptr<T>();
    const LSTMForward<T, decltype(FG_)::value, decltype(PEEP_)::value> forward{
      s,
      q,
      schedule,
      w_ih_t,
      w_hh_t,
      w_hr_t,
      w_xh_t,
      weights.bias.data_ptr<T>(),
      zh,
      zc,
      mask,
      lengths,
      save,
      x_bf16 && stacked ? nullptr : x.data_ptr<T>(),
      x_bf16 && stacked ? bf16_bits(x) : nullptr,
      gates.data_ptr<T>(),
      gates_bf16 ? bf16_bits(gates16) : nullptr,
      cells.data_ptr<T>(),
      save && zc ? c_states.data_ptr<T>() : nullptr,
      q.ln_hh ? ln_hw.data_ptr<T>() : nullptr,
      any_ln ? ln_stats.data_ptr<T>() : nullptr,
      return_states ? records.data_ptr<T>() : nullptr,
      x_bf16 ? nullptr : output.data_ptr<T>(),
      x_bf16 ? bf16_bits(output) : nullptr,
      h_p,
      c_n.data_ptr<T>(),
      mask ? h_in_buf.data_ptr<T>() : h_p,
      proj ? hh_buf.data_ptr<T>() : h_new_p,
      h_new_p,
      bf16 && kBF16Cell,
      bf16 && kBF16Cell && native_bf16()};
    schedule.run(B, [&](int64_t b0, int64_t b1, auto rows) {
      for (int64_t t = 0; t < T_; ++t) forward.step(t, b0, b1, rows);
    });
  });
  if (gates_bf16) gates = gates16;
  if (!save) {
    gates = none_tensor(bf16 ? like16 : like);  // the saved gates' dtype (ops.py: LSTM)
    cells = none_tensor(like);
    ln_hw = none_tensor(like);
    ln_stats = none_tensor(like);
  }
  return {output, h_n, c_n, records, gates, cells, c_states, ln_hw, ln_stats};
}

}  // namespace
