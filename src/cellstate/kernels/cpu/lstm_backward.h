// The LSTM backward (part of lstm.cpp's translation unit, so that the per-row phases inline into
// the step loop): hand-written BPTT over one layer, one direction, the whole padded sequence.
//
// It runs in chunks of steps (bptt.h), from the last. Each step, on the rows [b0, b1) a thread
// owns (all rows, split per phase, when the schedule runs the steps in order): dh through
// zoneout and the output projection; then through o tanh(c) (or its layer norm), the cell and
// the gates, into d a (and the per-row input gradients with a few input features); then
// dh_{t-1} = W_hh^T d(W_hh h). After each chunk, its weight gradients as GEMMs over its rows.
//
// With bfloat16 products, where nothing stands between d a and the products (no layer norm on
// the input or recurrent product, no recurrent dropout, D >= kNarrow), each row of d a is
// rounded to bfloat16 once, in the step loop while it is in cache (dA16), and the per-step
// product and the chunk's whole-sequence products (dW_hh, dW_ih, dx) all read that copy, with x
// and the output in bfloat16 as the forward read and wrote them: no per-product rounded copies.
// Chunks of 1024 rows keep d a and dA16 in L2.

#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <vector>

#include "bf16_cell.h"
#include "bptt.h"
#include "gemm.h"
#include "layer_norm.h"
#include "lstm_cell.h"
#include "runtime.h"

namespace {

// How many backward calls took the rounded-once path (see the top) since the library loaded
// (tests read it to know that it ran).
std::atomic<int64_t> bf16_rounded_once{0};

// One backward call's inputs, buffers (pointers at row 0; chunk buffers at the chunk's first
// step) and per-row phases. The phases are the step loop's body cut into named pieces:
// always_inline, so that they compile as that loop did (g++ would keep the larger ones as calls).
template <typename T>
struct LSTMBackward {
  const LSTMShape& s;
  const LSTMParams<T>& q;
  const Schedule& schedule;
  const PackedWeight<T>& w_hh;  // (G, P)
  const PackedWeight<T>& w_hr;  // (P, H)
  const Zoneout<T>& zh;
  const Zoneout<T>& zc;
  const T* mask = nullptr;          // (B, P) recurrent dropout, or null
  const int64_t* lengths = nullptr;  // (B), or null
  bool has_bias = false;
  bool bf16 = false;  // products on bfloat16 operands (PackedWeight, gemm())
  bool bf16_cell = false;  // bfloat16 products: the gate pass on bf16_cell.h's vectors
  // With a few input features, dW_ih, the bias gradient and dx are a few vectorised passes over
  // each row of d a, done while that row is in cache rather than as narrow GEMMs after a chunk.
  bool row_input_grads = false;
  // Saved by forward, and the forward's inputs
  const T* x = nullptr;         // (T, B, D)
  const T* h0 = nullptr;        // (B, P)
  const T* c0 = nullptr;        // (B, H)
  const T* output = nullptr;    // (T, B, P): h_t, so h_{t-1} of the next step
  const T* gates = nullptr;     // (T, B, G) activated, or null with gates16
  const uint16_t* gates16 = nullptr;  // (T, B, G) activated, in bfloat16 (bfloat16 products)
  const T* cells = nullptr;     // (T, B, H) c~_t
  const T* c_states = nullptr;  // (T, B, H) c_t after zoneout, or null (then c_t = c~_t)
  const T* ln_hw = nullptr;     // (T, B, G) normalised W_hh h, or null
  const T* stats = nullptr;     // (T, B, kStats), or null
  const T* w_ih_t = nullptr;    // (D, G) W_ih^T, when row_input_grads or the input layer norm
  // Incoming gradients (zero stands in for an absent one)
  const T* dout = nullptr;  // (T, B, P), or null
  const T* drec = nullptr;  // (5, T, B, H), or null
  const T* zero = nullptr;  // max(G, P, H) zeros
  // The running gradients w.r.t. the state after each step; end as dh0, dc0.
  T* dh = nullptr;  // (B, P)
  T* dc = nullptr;  // (B, H)
  // Per chunk of K steps
  T* dA = nullptr;   // (K, B, G): d pre-activations (after layer norm); (1, B, G) with dA16
  T* dHW = nullptr;  // (K, B, G): d (W_hh h); dA itself without the recurrent layer norm
  T* dHn = nullptr;  // (K, B, P): d h~ (projected), or null
  T* HH = nullptr;   // (K, B, H): o tanh(c), with a projection (for dW_hr)
  T* h_in = nullptr;  // (K B, P): h_{t-1} masked, with a mask
  T* xw = nullptr;    // (K B, G): W_ih x, then d(W_ih x), with the input layer norm
  // Per step
  T* dhh = nullptr;         // (B, H): d (o tanh(c))
  T* dcs = nullptr;         // (B, H): d c~_t through h_t
  T* dh_keep = nullptr;     // (B, P): the zoneout share of dh
  T* dh_in = nullptr;       // (B, P): W_hh^T d a
  T* hh_scratch = nullptr;  // (B, H): o tanh(c) without a projection
  T* chat = nullptr;        // (B, H): LN_c's xhat
  T* shown = nullptr;       // (B, H): LN_c(c)
  T* xw_row = nullptr;      // (B, G): as xw, per row (row_input_grads)
  T* gates_step = nullptr;  // (B, G): gates16's rows in float32, or null
  const T* ones = nullptr;  // (K B)
  // bfloat16 bits (see the top), or all null: d a per chunk (K, B, G), x (T, B, D), the output
  // (T, B, P), h0 (B, P) and W_ih (G, D)
  uint16_t* dA16 = nullptr;
  const uint16_t* x16 = nullptr;
  const uint16_t* output16 = nullptr;
  const uint16_t* h0_16 = nullptr;
  const uint16_t* w_ih16 = nullptr;
  // Results
  T* dx = nullptr;  // (T, B, D), or null
  T* dw_ih = nullptr;
  T* dw_hh = nullptr;
  T* db = nullptr;
  T* dw_hr = nullptr;
  ThreadSums<T>* peep_sums = nullptr;   // w_ci, w_cf, w_co (3, H)
  ThreadSums<T>* ln_hh_sums = nullptr;  // (G)
  ThreadSums<T>* ln_c_sums = nullptr;   // weight, bias (2, H)
  ThreadSums<T>* ln_ih_sums = nullptr;  // (G)
  ThreadSums<T>* input_sums = nullptr;  // with row_input_grads: dW_ih^T (D, G), then db (G)
  // with dA16: db (G), summed while each row of d a is rounded (in cache), not in a pass over
  // the chunk's d a (6.5 MB of float32 per call at 100x32x128x128) after it
  ThreadSums<T>* bias_sums = nullptr;

  // Step t of the chunk that starts at step s0.
  template <bool FG, bool PEEP, typename Rows>
  [[gnu::always_inline]] void step(int64_t s0, int64_t t, int64_t b0, int64_t b1,
                                   Rows& rows) const {
    const int64_t B = s.B, k = t - s0;
    rows(b0, b1, [&](int64_t b) { zoneout_row(t, k, b); });
    if (q.w_hr) schedule.gemm(b0, b1, w_hr, dHn + k * B * s.P, s.P, false, dhh, s.H);
    rows(b0, b1, [&](int64_t b) { cell_row<FG, PEEP>(t, k, b); });
    if constexpr (std::is_same_v<T, float>) {
      if (dA16) {  // on the rows rounded by cell_row (no second operand: k1 = G)
        schedule.gemm_stacked(b0, b1, w_hh, dA16 + k * B * s.G, s.G, s.G,
                              static_cast<const float*>(nullptr), 0, dh_in, s.P);
      } else {
        schedule.gemm(b0, b1, w_hh, dHW + k * B * s.G, s.G, false, dh_in, s.P);
      }
    } else {
      schedule.gemm(b0, b1, w_hh, dHW + k * B * s.G, s.G, false, dh_in, s.P);
    }
    rows(b0, b1, [&](int64_t b) { recurrent_row(t, b); });
  }

  // incoming gradient i of records (c, i, f, g, o) at a row
  const T* rec(int64_t row, int i) const {
    return drec ? drec + i * s.T * s.B * s.H + row * s.H : zero;
  }

  // dh_t (and the output's gradient) through zoneout: into h~_t, and the share kept for h_{t-1}.
  [[gnu::always_inline]] void zoneout_row(int64_t t, int64_t k, int64_t b) const {
    const int64_t P = s.P;
    T* dhn = q.w_hr ? dHn + (k * s.B + b) * P : dhh + b * s.H;
    if (!valid(lengths, t, b)) {
      std::fill(dhn, dhn + P, T(0));
      return;
    }
    zoneout_backward_row(P, dh + b * P, dout ? dout + (t * s.B + b) * P : zero,
                         zh ? zh.row(t, b, P) : zero, dh_keep + b * P, dhn);
  }

  // Through o tanh(c) (or its layer norm), the cell and the gates into d a.
  template <bool FG, bool PEEP>
  [[gnu::always_inline]] void cell_row(int64_t t, int64_t k, int64_t b) const {
    const int64_t B = s.B, G = s.G, H = s.H;
    const int64_t da_row = ((dA16 ? 0 : k) * B + b) * G;  // dA16: dA is one step
    T* da = dA + da_row;
    T* dhw = dHW + da_row;
    T* hh = q.w_hr ? HH + (k * B + b) * H : hh_scratch + b * H;
    if (!valid(lengths, t, b)) {
      std::fill(da, da + G, T(0));
      if (dA16) std::fill_n(dA16 + (k * B + b) * G, G, uint16_t(0));
      if (q.ln_hh) std::fill(dhw, dhw + G, T(0));
      std::fill(hh, hh + H, T(0));
      if (row_input_grads && dx) std::fill_n(dx + (t * B + b) * s.D, s.D, T(0));
      return;
    }
    const int64_t row = t * B + b;
    const T* a = gates + row * G;
    if constexpr (std::is_same_v<T, float>) {
      if (gates16) {  // widened while the row is in cache: the same values in float32
        gates_from_bf16(s, gates16 + row * G, gates_step + b * G);
        a = gates_step + b * G;
      }
    }
    const T* c_new = cells + row * H;
    const T* c_prev = t == 0       ? c0 + b * H
                      : c_states ? c_states + (row - B) * H
                                 : cells + (row - B) * H;
    T* dcs_b = dcs + b * H;
    output_row(row, b, a, c_new, hh, da, dcs_b);
    const T* z = zc ? zc.row(t, b, H) : zero;
    bool done = false;
    if constexpr (std::is_same_v<T, float>) {
      if (bf16_cell) {
        gate_backward_row_bf16<FG, PEEP>(s, q, a, c_prev, c_new, dcs_b, z, rec(row, 0),
                                         rec(row, 1), rec(row, 2), rec(row, 3), dc + b * H, da,
                                         peep_sums->mine());
        done = true;
      }
    }
    if (!done) {
      gate_backward_row<T, FG, PEEP>(s, q, a, c_prev, c_new, dcs_b, z, rec(row, 0), rec(row, 1),
                                     rec(row, 2), rec(row, 3), dc + b * H, da, peep_sums->mine());
    }
    if constexpr (std::is_same_v<T, float>) {
      if (dA16) {
        round_to_bf16(da, G, dA16 + (k * B + b) * G);
        if (has_bias) {
          T* __restrict acc = bias_sums->mine();
          for (int64_t j = 0; j < G; ++j) acc[j] += da[j];
        }
      }
    }
    if (row_input_grads) input_row_grads(row, b, da);
    if (q.ln_hh) {
      row_layer_norm_backward(da, ln_hw + row * G, q.ln_hh, stats[row * kStats + kRstdHH], G,
                              dhw, ln_hh_sums->mine());
    }
  }

  // Through h~ = o tanh(c), or o tanh(LN(c)): hh, d a_o and dcs (the gradient of c~_t via h).
  [[gnu::always_inline]] void output_row(int64_t row, int64_t b, const T* a, const T* c_new,
                                         T* hh, T* da, T* dcs_b) const {
    const int64_t H = s.H;
    const T* dhh_b = dhh + b * H;
    if (!q.ln_c_w) {
      output_backward_row(H, c_new, a + s.go(), dhh_b, rec(row, 4), hh, da + s.go(), dcs_b);
      return;
    }
    const T* st = stats + row * kStats;
    const RowNorm<T> norm{st[kMeanC], st[kRstdC]};
    T* chat_b = chat + b * H;
    T* shown_b = shown + b * H;
    for (int64_t j = 0; j < H; ++j) {
      chat_b[j] = norm.xhat(c_new[j]);
      shown_b[j] = affine(chat_b[j], q.ln_c_w, q.ln_c_b, j);
    }
    output_backward_row(H, shown_b, a + s.go(), dhh_b, rec(row, 4), hh, da + s.go(), dcs_b);
    T* ln_c_acc = ln_c_sums->mine();
    T* dbias = ln_c_acc + H;
    for (int64_t j = 0; j < H; ++j) dbias[j] += dcs_b[j];
    row_layer_norm_backward(dcs_b, chat_b, q.ln_c_w, norm.rstd, H, dcs_b, ln_c_acc);
  }

  // xw: W_ih x of a row in, d(W_ih x) out, through the input layer norm (dy: the row's d a).
  [[gnu::always_inline]] void input_layer_norm_backward(int64_t row, const T* da, T* xw_r,
                                                        T* acc) const {
    const T* st = stats + row * kStats;
    const RowNorm<T> norm{st[kMeanIH], st[kRstdIH]};
    normalise_row(norm, xw_r, s.G, xw_r);
    row_layer_norm_backward(da, xw_r, q.ln_ih, norm.rstd, s.G, xw_r, acc);
  }

  // With a few input features: dW_ih, db and dx of one row from its d a.
  [[gnu::always_inline]] void input_row_grads(int64_t row, int64_t b, const T* da) const {
    const int64_t D = s.D, G = s.G;
    T* acc = input_sums->mine();
    const T* x_row = x + row * D;
    const T* dxw = da;
    if (q.ln_ih) {
      T* xw_b = xw_row + b * G;  // W_ih x recomputed: D row updates
      std::fill(xw_b, xw_b + G, T(0));
      for (int64_t i = 0; i < D; ++i) axpy(G, x_row[i], w_ih_t + i * G, xw_b);
      input_layer_norm_backward(row, da, xw_b, ln_ih_sums->mine());
      dxw = xw_b;
    }
    for (int64_t i = 0; i < D; ++i) axpy(G, x_row[i], dxw, acc + i * G);
    if (has_bias) axpy(G, T(1), da, acc + D * G);
    if (dx) {
      T* dx_row = dx + row * D;
      for (int64_t i = 0; i < D; ++i) dx_row[i] = dot(dxw, w_ih_t + i * G, G);
    }
  }

  // dh_{t-1} = W_hh^T d(W_hh h) (masked) + the zoneout share
  [[gnu::always_inline]] void recurrent_row(int64_t t, int64_t b) const {
    if (!valid(lengths, t, b)) return;
    const int64_t P = s.P;
    T* __restrict dh_b = dh + b * P;
    const T* __restrict din = dh_in + b * P;
    const T* __restrict keep = dh_keep + b * P;
    if (mask) {
      const T* __restrict m = mask + b * P;
      for (int64_t j = 0; j < P; ++j) dh_b[j] = din[j] * m[j] + keep[j];
    } else {
      for (int64_t j = 0; j < P; ++j) dh_b[j] = din[j] + keep[j];
    }
  }

  // The weight gradients of the chunk of steps [s0, s1): GEMMs over all its rows.
  void chunk_weight_grads(int64_t s0, int64_t s1) const {
    const int64_t B = s.B, D = s.D, G = s.G, P = s.P, H = s.H, R = (s1 - s0) * B;
    if constexpr (std::is_same_v<T, float>) {
      if (dA16) {
        add_recurrent_weight_grad(s0, s1, B, G, P, dA16, h0_16, output16, dw_hh);
        if (q.w_hr) gemm<T>(true, false, P, H, R, T(1), dHn, P, HH, H, T(1), dw_hr, H, bf16);
        add_input_grads(R, G, D, dA16, x16 + s0 * B * D, w_ih16, dw_ih,
                        dx ? dx + s0 * B * D : nullptr);
        return;
      }
    }
    if (mask) {  // dW_hh += d(W_hh h)^T (h_{t-1} masked), h_{t-1} being h0 at t = 0
      for (int64_t t = s0; t < s1; ++t) {
        const T* src = t == 0 ? h0 : output + (t - 1) * B * P;
        T* dst = h_in + (t - s0) * B * P;
        for (int64_t k = 0; k < B * P; ++k) dst[k] = src[k] * mask[k % (B * P)];
      }
      gemm<T>(true, false, G, P, R, T(1), dHW, G, h_in, P, T(1), dw_hh, P, bf16);
    } else {
      add_recurrent_weight_grad(s0, s1, B, G, P, dHW, h0, output, dw_hh, bf16);
    }
    if (has_bias && !row_input_grads) add_bias_grad(R, G, dA, ones, db);
    if (q.w_hr) gemm<T>(true, false, P, H, R, T(1), dHn, P, HH, H, T(1), dw_hr, H, bf16);
    if (row_input_grads) return;
    // d(W_ih x): through the input layer norm (its input recomputed: one cheap GEMM)
    const T* dxw = dA;
    const T* x_rows = x + s0 * B * D;
    if (q.ln_ih) {
      gemm<T>(false, false, R, G, D, T(1), x_rows, D, w_ih_t, G, T(0), xw, G, bf16);
      at::parallel_for(0, R, 64, [&](int64_t r0, int64_t r1) {
        T* acc = ln_ih_sums->mine();
        for (int64_t r = r0; r < r1; ++r) {
          input_layer_norm_backward(s0 * B + r, dA + r * G, xw + r * G, acc);
        }
      });
      dxw = xw;
    }
    add_input_grads(R, G, D, dxw, x_rows, q.w_ih, dw_ih, dx ? dx + s0 * B * D : nullptr,
                    bf16);
  }
};

template <typename T>
std::vector<Tensor> lstm_backward_impl(
    const OptTensor& grad_output_, const OptTensor& grad_h_n, const OptTensor& grad_c_n,
    const OptTensor& grad_records_, const Tensor& x_, const Tensor& h0_, const Tensor& c0_,
    const Tensor& output_, const Tensor& gates_, const Tensor& cells_,
    const OptTensor& c_states_, const OptTensor& ln_hw_, const OptTensor& ln_stats_,
    LSTMTensors& tensors, bool has_bias, const OptTensor& zoneout_h, const OptTensor& zoneout_c,
    const OptTensor& mask_, const OptTensor& lengths_, bool forget_gate, bool need_dx,
    bool bf16) {
  const LSTMShape s = lstm_shape(x_, tensors.w_ih, tensors.w_hh, forget_gate);
  const auto [T_, B, D, H, P, G] = std::tuple{s.T, s.B, s.D, s.H, s.P, s.G};
  const LSTMParams<T> q = lstm_params<T>(tensors);
  const bool row_input_grads = D < kNarrow;
  const PackedWeight<T> w_hh(tensors.w_hh, B, bf16);
  // d a rounded once (dA16: see the top); x and the output (bfloat16 with bfloat16 products,
  // else float32) are then read only in bfloat16, and otherwise only in float32.
  const bool rounded_once = bf16 && w_hh.bf16_packed() && bf16_gemm_available() && !q.ln_ih &&
                            !q.ln_hh && !present(mask_) && !row_input_grads;
  const at::ScalarType x_dtype = rounded_once ? at::kBFloat16 : c10::CppTypeToScalarType<T>::value;
  const Tensor x16 = x_.to(x_dtype).contiguous(), output16 = output_.to(x_dtype).contiguous();
  // float32 tensors where not rounded_once; empty (their options only) where
  const Tensor x = rounded_once ? at::empty({0}, c0_.options()) : x16;
  const Tensor output = rounded_once ? x : output16;
  const Tensor h0 = h0_.contiguous(), c0 = c0_.contiguous();
  const Tensor gates = gates_.contiguous(), cells = cells_.contiguous();
  const bool gates_bf16 = gates.scalar_type() == at::kBFloat16;
  TORCH_CHECK(!gates_bf16 || bf16,
              "cellstate cpu kernel: bfloat16 gates come with bfloat16 products only");
  const bool proj = q.w_hr != nullptr;
  const Zoneout<T> zh(zoneout_h, B, P), zc(zoneout_c, B, H);
  const OptTensor mask_c = contiguous(mask_);
  const OptTensor lengths_c = contiguous(lengths_);
  const OptTensor grad_output_c = contiguous(grad_output_);
  const OptTensor grad_records_c = contiguous(grad_records_);
  const OptTensor c_states_c = contiguous(c_states_);
  const OptTensor ln_hw_c = contiguous(ln_hw_);
  const OptTensor ln_stats_c = contiguous(ln_stats_);

  Tensor dh = grad_h_n ? grad_h_n->contiguous().clone() : at::zeros({B, P}, x.options());
  Tensor dc = grad_c_n ? grad_c_n->contiguous().clone() : at::zeros({B, H}, x.options());
  Tensor dx = need_dx ? empty_like_shape(x, {T_, B, D}) : none_tensor(x);
  Tensor dw_ih = at::zeros({G, D}, x.options());
  Tensor dw_hh = at::zeros({G, P}, x.options());
  Tensor db = has_bias ? at::zeros({G}, x.options()) : none_tensor(x);
  Tensor dw_hr = proj ? at::zeros({P, H}, x.options()) : none_tensor(x);
  Tensor dpeep = at::zeros({3, H}, x.options());  // w_ci, w_cf, w_co
  Tensor dln_ih = at::zeros({G}, x.options());
  Tensor dln_hh = at::zeros({G}, x.options());
  Tensor dln_c = at::zeros({2, H}, x.options());  // weight, bias

  const int64_t K = rounded_once ? chunk_steps(T_, B, G, 1024) : chunk_steps(T_, B, G);
  // From the saved tensors' pool (kept for the next training step, no fresh pages: runtime.h)
  // (rounded_once: d a is read only in bfloat16 after its row is rounded, so one step of it)
  Tensor dA = saved_empty(x, {rounded_once ? 1 : K, B, G});
  Tensor dA16 = rounded_once ? saved_empty(x16, {K, B, G}) : none_tensor(x);
  const Tensor h0_16 = rounded_once ? h0.to(at::kBFloat16) : none_tensor(x);
  const Tensor w_ih16 = rounded_once ? tensors.w_ih.to(at::kBFloat16) : none_tensor(x);
  Tensor dHW = q.ln_hh ? saved_empty(x, {K, B, G}) : dA;
  Tensor dHn = proj ? empty_like_shape(x, {K, B, P}) : none_tensor(x);
  Tensor HH = proj ? empty_like_shape(x, {K, B, H}) : none_tensor(x);
  Tensor h_in = mask_c ? empty_like_shape(x, {K * B, P}) : none_tensor(x);
  Tensor xw = q.ln_ih && !row_input_grads ? empty_like_shape(x, {K * B, G}) : none_tensor(x);
  Tensor dhh = empty_like_shape(x, {B, H});
  Tensor dcs = empty_like_shape(x, {B, H});
  Tensor dh_keep = empty_like_shape(x, {B, P});
  Tensor dh_in = empty_like_shape(x, {B, P});
  Tensor ones = at::ones({K * B}, x.options());
  Tensor zeros = at::zeros({std::max({G, P, H})}, x.options());
  Tensor hh_scratch = empty_like_shape(x, {B, H});
  Tensor chat = q.ln_c_w ? empty_like_shape(x, {B, H}) : none_tensor(x);
  Tensor shown = q.ln_c_w ? empty_like_shape(x, {B, H}) : none_tensor(x);
  Tensor xw_row = row_input_grads && q.ln_ih ? empty_like_shape(x, {B, G}) : none_tensor(x);
  Tensor gates_step = gates_bf16 ? empty_like_shape(x, {B, G}) : none_tensor(x);
  const bool need_w_ih_t = row_input_grads || q.ln_ih;
  const Tensor w_ih_t = need_w_ih_t ? tensors.w_ih.t().contiguous() : Tensor();

  ThreadSums<T> peep_sums(3 * H), ln_hh_sums(G), ln_c_sums(2 * H), ln_ih_sums(G);
  ThreadSums<T> input_sums(row_input_grads ? (D + 1) * G : 0);
  ThreadSums<T> bias_sums(rounded_once && has_bias ? G : 0);
  const Schedule schedule(B, G * P, G * P + (proj ? H * P : 0) + 40 * H, 40 * H, bf16);
  const PackedWeight<T> w_hr =
    proj ? PackedWeight<T>(*tensors.w_hr, B, bf16) : PackedWeight<T>();

  LSTMBackward<T> backward{s, q, schedule, w_hh, w_hr, zh, zc};
  backward.mask = ptr<T>(mask_c);
  backward.lengths = lengths_c ? lengths_c->data_ptr<int64_t>() : nullptr;
  backward.has_bias = has_bias;
  backward.bf16 = bf16;
  backward.bf16_cell = bf16 && kBF16Cell;
  backward.row_input_grads = row_input_grads;
  backward.x = rounded_once ? nullptr : x.data_ptr<T>();
  backward.h0 = h0.data_ptr<T>();
  backward.c0 = c0.data_ptr<T>();
  backward.output = rounded_once ? nullptr : output.data_ptr<T>();
  backward.gates = gates_bf16 ? nullptr : gates.data_ptr<T>();
  backward.gates16 = gates_bf16 ? bf16_bits(gates) : nullptr;
  backward.gates_step = gates_bf16 ? gates_step.data_ptr<T>() : nullptr;
  backward.cells = cells.data_ptr<T>();
  backward.c_states = ptr<T>(c_states_c);
  backward.ln_hw = ptr<T>(ln_hw_c);
  backward.stats = ptr<T>(ln_stats_c);
  backward.w_ih_t = need_w_ih_t ? w_ih_t.data_ptr<T>() : nullptr;
  backward.dout = ptr<T>(grad_output_c);
  backward.drec = ptr<T>(grad_records_c);
  backward.zero = zeros.data_ptr<T>();
  backward.dh = dh.data_ptr<T>();
  backward.dc = dc.data_ptr<T>();
  backward.dA = dA.data_ptr<T>();
  backward.dHW = dHW.data_ptr<T>();
  backward.dHn = proj ? dHn.data_ptr<T>() : nullptr;
  backward.HH = proj ? HH.data_ptr<T>() : nullptr;
  backward.h_in = mask_c ? h_in.data_ptr<T>() : nullptr;
  backward.xw = xw.numel() ? xw.data_ptr<T>() : nullptr;
  backward.dhh = dhh.data_ptr<T>();
  backward.dcs = dcs.data_ptr<T>();
  backward.dh_keep = dh_keep.data_ptr<T>();
  backward.dh_in = dh_in.data_ptr<T>();
  backward.hh_scratch = hh_scratch.data_ptr<T>();
  backward.chat = q.ln_c_w ? chat.data_ptr<T>() : nullptr;
  backward.shown = q.ln_c_w ? shown.data_ptr<T>() : nullptr;
  backward.xw_row = xw_row.numel() ? xw_row.data_ptr<T>() : nullptr;
  backward.ones = ones.data_ptr<T>();
  backward.dx = need_dx ? dx.data_ptr<T>() : nullptr;
  backward.dw_ih = dw_ih.data_ptr<T>();
  backward.dw_hh = dw_hh.data_ptr<T>();
  backward.db = has_bias ? db.data_ptr<T>() : nullptr;
  backward.dw_hr = proj ? dw_hr.data_ptr<T>() : nullptr;
  backward.peep_sums = &peep_sums;
  backward.ln_hh_sums = &ln_hh_sums;
  backward.ln_c_sums = &ln_c_sums;
  backward.ln_ih_sums = &ln_ih_sums;
  backward.input_sums = &input_sums;
  backward.bias_sums = &bias_sums;
  if (rounded_once) {
    ++bf16_rounded_once;
    backward.dA16 = bf16_bits(dA16);
    backward.x16 = bf16_bits(x16);
    backward.output16 = bf16_bits(output16);
    backward.h0_16 = bf16_bits(h0_16);
    backward.w_ih16 = bf16_bits(w_ih16);
  }

  for (int64_t s1 = T_; s1 > 0; s1 -= K) {
    const int64_t s0 = std::max<int64_t>(0, s1 - K);
    with_cell(forget_gate, q.w_ci != nullptr, [&](auto FG_, auto PEEP_) {
      constexpr bool FG = decltype(FG_)::value;
      constexpr bool PEEP = decltype(PEEP_)::value;
      schedule.run(B, [&](int64_t b0, int64_t b1, auto rows) {
        for (int64_t t = s1 - 1; t >= s0; --t) {
          backward.template step<FG, PEEP>(s0, t, b0, b1, rows);
        }
      });
    });
    backward.chunk_weight_grads(s0, s1);
  }

  if (row_input_grads) {
    std::vector<T> sums(size_t((D + 1) * G), T(0));
    input_sums.add_to(sums.data());
    T* dw = dw_ih.data_ptr<T>();
    for (int64_t j = 0; j < G; ++j) {
      for (int64_t i = 0; i < D; ++i) dw[j * D + i] = sums[size_t(i * G + j)];
    }
    if (has_bias) std::copy(sums.end() - G, sums.end(), db.data_ptr<T>());
  }
  peep_sums.add_to(dpeep.data_ptr<T>());
  ln_hh_sums.add_to(dln_hh.data_ptr<T>());
  ln_c_sums.add_to(dln_c.data_ptr<T>());
  ln_ih_sums.add_to(dln_ih.data_ptr<T>());
  if (rounded_once && has_bias) bias_sums.add_to(db.data_ptr<T>());
  // Separate tensors, not views of one: custom-op outputs must not alias each other.
  auto opt = [&](bool on, const Tensor& t) { return on ? t.clone() : none_tensor(x); };
  return {dx,
          dh,
          dc,
          dw_ih,
          dw_hh,
          db,
          dw_hr,
          opt(q.w_ci != nullptr, dpeep[0]),
          opt(q.w_cf != nullptr, dpeep[1]),
          opt(q.w_co != nullptr, dpeep[2]),
          opt(q.ln_ih != nullptr, dln_ih),
          opt(q.ln_hh != nullptr, dln_hh),
          opt(q.ln_c_w != nullptr, dln_c[0]),
          opt(q.ln_c_b != nullptr, dln_c[1])};
}

}  // namespace
