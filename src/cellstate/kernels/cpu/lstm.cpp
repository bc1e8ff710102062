// The fused CPU kernels: one LSTM (or plain RNN) layer in one direction over a whole padded
// sequence, forward in one call and a hand-written BPTT backward in one call. The equations,
// and every variant, are those of kernels/reference.py (the spec); names follow it.
//
// Shapes: T time, B batch, D input, H hidden, P output (proj_size or H), G gate rows (4H; 3H
// without a forget gate: rows i, g, o). Tensors are contiguous and row-major; a "row" is one
// sequence at one step. Sequences are independent, so threads split the batch (see Schedule);
// the per-step GEMMs (each step's input projection and recurrent product) run on weights packed
// once per call (see PackedWeight), and the backward's whole-sequence GEMMs (weight gradients,
// input gradient) use BLAS threads.
//
// Saved for backward (forward with save=true): the activated gates (T, B, G; in bfloat16 with
// bfloat16 products, as oneDNN's bfloat16 LSTM saves them), the cell before
// zoneout c~_t (T, B, H), the cell state after zoneout (only with zoneout on c), and for layer
// norm the normalised W_hh h (T, B, G) and per-row statistics (T, B, 5). h_{t-1} is the
// output itself. The backward runs in chunks of steps so that its gradient buffers stay small
// while the weight gradients are still large GEMMs.
//
// The kernels are one translation unit, this file, so that the per-row phases and small GEMMs
// inline into the step loops; the headers hold them by concern:
//   activations.h  sigmoid and tanh
//   gemm.h         gemm() by shape, and PackedWeight (weights packed for the per-step GEMMs)
//   bf16_round.h   float32 <-> bfloat16 (on AVX512-BF16 where the CPU has it)
//   runtime.h      tensor helpers, SavedMemory (the saved tensors' pool), ThreadSums, Schedule
//   layer_norm.h   one row's layer norm, forward and backward
//   lstm_cell.h    the LSTM's shape, parameters and per-row cell math, forward and backward
//   lstm_forward.h, lstm_backward.h   the LSTM over rows and steps
//   bptt.h         what the LSTM and RNN backward share (chunks, the recurrent weight gradient)
//   rnn.h          the plain RNN, forward and backward

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>

#include <initializer_list>
#include <optional>
#include <string_view>
#include <type_traits>
#include <vector>

#include "entry_points.h"
#include "lstm_backward.h"
#include "lstm_forward.h"
#include "rnn.h"

using at::Tensor;
using OptTensor = std::optional<Tensor>;

namespace {

// x in float32 or float64 (or bfloat16 with bf16_x: then computed in float32), and the tensors
// in `same` in the dtype computed in.
void check_inputs(const Tensor& x, std::initializer_list<const Tensor*> same,
                  bool bf16_x = false) {
  const at::ScalarType dtype =
    bf16_x && x.scalar_type() == at::kBFloat16 ? at::kFloat : x.scalar_type();
  TORCH_CHECK(x.device().is_cpu(), "cellstate cpu kernel: tensors must be on the CPU");
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "cellstate cpu kernel: float32 or float64 only, got ", x.scalar_type());
  TORCH_CHECK(x.dim() == 3 && x.size(0) > 0 && x.size(1) > 0,
              "cellstate cpu kernel: x must be (T, B, D) with T, B > 0");
  for (const Tensor* t : same) {
    TORCH_CHECK(t->scalar_type() == dtype && t->device().is_cpu(),
                "cellstate cpu kernel: every tensor must be a CPU ", dtype, " tensor");
  }
}

// bfloat16 products (see PackedWeight): the LSTM's weight matrices w_ih, w_hh (and w_hr) come in
// bfloat16 with everything else in float32 (x in float32, or in the forward bfloat16); true when
// that is the case (matrices_to_float() makes the float32 copies the kernel needs), false for
// matrices of x's dtype, an error for any other mix.
bool bf16_products(const Tensor& x, const LSTMTensors& p) {
  const bool bf16 = (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16) &&
                    p.w_hh.scalar_type() == at::kBFloat16;
  if (!bf16) return false;
  for (const Tensor* w : {&p.w_ih, &p.w_hh, p.w_hr ? &*p.w_hr : nullptr}) {
    if (w == nullptr) continue;
    TORCH_CHECK(w->scalar_type() == at::kBFloat16,
                "cellstate cpu kernel: with bfloat16 products, w_ih, w_hh and w_hr must all be "
                "bfloat16; got ", w->scalar_type());
  }
  return true;
}

// bfloat16 storage (with bfloat16 matrices: bf16_products()): x, the states, the vectors and the
// noise (and for backward the output and the gradients) in bfloat16 run as float32 copies, and
// the results come back in bfloat16 (the gradients in each input's dtype): the casts of
// ops.py's _in_float32 without an autograd node and a Python call for each.
void to_float(Tensor& t) {
  if (t.defined() && t.scalar_type() == at::kBFloat16) t = t.to(at::kFloat);
}
void to_float(OptTensor& t) {
  if (t) to_float(*t);
}
void to_float(bool) {}

Tensor as_dtype(const Tensor& t, at::ScalarType dtype) {
  return t.numel() && t.scalar_type() != dtype ? t.to(dtype) : t;
}

// keep_x: x (and for backward the output) too stays bfloat16 (the kernel with bfloat16 matrices
// reads them as they are, or makes the float32 copies it needs). The matrices and the saved
// gates (bfloat16 with bfloat16 matrices only) always stay as they are.
#define CELLSTATE_TO_FLOAT(type, name)                                                    \
  if (std::string_view(#name) != "w_ih" && std::string_view(#name) != "w_hh" &&           \
      std::string_view(#name) != "w_hr" && std::string_view(#name) != "gates" &&          \
      ((std::string_view(#name) != "x" && std::string_view(#name) != "output") || !keep_x)) { \
    to_float(a.name);                                                                     \
  }
LSTMForwardArgs in_float32(LSTMForwardArgs a, bool keep_x) {
  CELLSTATE_LSTM_FORWARD(CELLSTATE_TO_FLOAT)
  return a;
}
LSTMBackwardArgs in_float32(LSTMBackwardArgs a, bool keep_x) {
  CELLSTATE_LSTM_BACKWARD(CELLSTATE_TO_FLOAT)
  return a;
}
#undef CELLSTATE_TO_FLOAT

// The dtypes of x, h0, c0 and the parameters (float32 for an absent one): those of backward's
// gradients, in order.
std::vector<at::ScalarType> input_dtypes(const LSTMBackwardArgs& a) {
  auto dtype = [](const auto& t) {
    if constexpr (std::is_same_v<std::decay_t<decltype(t)>, OptTensor>) {
      return t ? t->scalar_type() : at::kFloat;
    } else {
      return t.scalar_type();
    }
  };
#define CELLSTATE_DTYPE(type, name) dtype(a.name),
  return {dtype(a.x), dtype(a.h0), dtype(a.c0), CELLSTATE_LSTM_PARAMS(CELLSTATE_DTYPE)};
#undef CELLSTATE_DTYPE
}

}  // namespace

std::vector<int64_t> bf16_product_counts() {
  return {bf16_packings.load(), bf16_gemms.load(), bf16_rounded_once.load()};
}

std::vector<bool> bf16_product_support() {
  return {bf16_brgemm_works(), bf16_brgemm_works() && gemm_bf16bf16f32_ != nullptr};
}

std::vector<Tensor> bf16_cell_activations(const Tensor& x_) {
  TORCH_CHECK(kBF16Cell,
              "cellstate cpu kernel: this build has no vectorised bfloat16 cell (no AVX-512); "
              "bfloat16 runs use the float32 gate math");
  TORCH_CHECK(x_.scalar_type() == at::kFloat, "bf16_cell_activations: float32 only, got ",
              x_.scalar_type());
  const Tensor x = x_.contiguous();
  Tensor sigmoids = empty_like_shape(x, x.sizes()), tanhs = empty_like_shape(x, x.sizes());
  activations_bf16(x.data_ptr<float>(), x.numel(), sigmoids.data_ptr<float>(),
                   tanhs.data_ptr<float>());
  return {sigmoids, tanhs};
}

bool set_native_bf16(bool on) {
  TORCH_CHECK(!on || native_bf16_supported(),
              "cellstate cpu kernel: this CPU (or build) has no AVX512-BF16; the bfloat16 "
              "rounding runs on AVX-512F or scalar code");
  return native_bf16_switch().exchange(on);
}

Tensor bf16_round_bits(const Tensor& x_, bool native) {
  TORCH_CHECK(x_.scalar_type() == at::kFloat, "bf16_round_bits: float32 only, got ",
              x_.scalar_type());
  TORCH_CHECK(!native || native_bf16_supported(),
              "bf16_round_bits: this CPU (or build) has no AVX512-BF16");
  const Tensor x = x_.contiguous();
  Tensor bits = at::empty(x.sizes(), x.options().dtype(at::kShort));
  const float* in = x.data_ptr<float>();
  auto* out = reinterpret_cast<uint16_t*>(bits.data_ptr<int16_t>());
#ifdef __AVX512F__
  if (native) {
    bf16x16::round_to_bf16_native(in, x.numel(), out);
    return bits;
  }
  for (int64_t i = 0; i < x.numel(); i += 16) {
    const int64_t n = std::min<int64_t>(16, x.numel() - i);
    const __mmask16 k = __mmask16((1u << n) - 1);
    _mm256_mask_storeu_epi16(out + i, k, bf16x16::round(_mm512_maskz_loadu_ps(k, in + i)));
  }
#else
  for (int64_t i = 0; i < x.numel(); ++i) out[i] = bf16_round(in[i]);
#endif
  return bits;
}

// ---- entry points (entry_points.h; bound in bindings.cpp) ----------------------------------

namespace {

// A forward result passed back to backward: absent (the ops' empty tensor) or present (never
// empty: T, B > 0 are checked, and with H = 0 there is nothing to read).
OptTensor saved_result(const Tensor& t) { return t.numel() ? OptTensor(t) : std::nullopt; }

// The two biases share one gradient (they enter the gates as a sum): one result per bias, as
// separate tensors (custom-op results must not alias each other).
std::pair<Tensor, Tensor> bias_grads(const Tensor& db, bool b_ih, bool b_hh, const Tensor& x) {
  if (b_ih && b_hh) return {db, db.clone()};
  return {b_ih ? db : none_tensor(x), b_hh ? db : none_tensor(x)};
}

}  // namespace

namespace {

// lstm_forward() on float32 or float64 tensors (with bfloat16 products: bfloat16 matrices, and
// x in float32 or bfloat16)
std::vector<Tensor> lstm_forward_run(const LSTMForwardArgs& a) {
  LSTMTensors p = lstm_tensors(a);
  const bool bf16 = bf16_products(a.x, p);
  if (bf16) {
    check_inputs(a.x, {&a.h0, &a.c0}, true);
  } else {
    check_inputs(a.x, {&a.h0, &a.c0, &p.w_ih, &p.w_hh});
  }
  return AT_DISPATCH_FLOATING_TYPES(bf16 ? at::kFloat : a.x.scalar_type(),
                                    "cellstate_lstm_forward", [&] {
    return lstm_forward_impl<scalar_t>(a.x, a.h0, a.c0, p, a.zoneout_h, a.zoneout_c,
                                       a.recurrent_mask, a.lengths, a.forget_gate,
                                       a.return_states, a.save, bf16);
  });
}

}  // namespace

std::vector<Tensor> lstm_forward(const LSTMForwardArgs& a) {
  if (a.x.scalar_type() != at::kBFloat16) return lstm_forward_run(a);
  // With bfloat16 matrices x stays bfloat16: the kernel reads it (and writes the output) so.
  std::vector<Tensor> results =
    lstm_forward_run(in_float32(a, a.w_hh.scalar_type() == at::kBFloat16));
  // output, h_n, c_n, records
  for (size_t k : {0, 1, 2, 3}) results[k] = as_dtype(results[k], at::kBFloat16);
  return results;
}

namespace {

// lstm_backward() on float32 or float64 tensors (with bfloat16 products: bfloat16 matrices, and
// x and the output both in float32 or both in bfloat16)
std::vector<Tensor> lstm_backward_run(const LSTMBackwardArgs& a) {
  LSTMTensors p = lstm_tensors(a);
  const bool bf16 = bf16_products(a.x, p);
  if (bf16) matrices_to_float(p, true);
  check_inputs(a.x, {&a.h0, &a.c0, &p.w_ih, &p.w_hh, &a.cells}, bf16);
  TORCH_CHECK(a.gates.scalar_type() == (bf16 ? at::kBFloat16 : a.x.scalar_type()),
              "cellstate cpu kernel: gates must be ", bf16 ? "bfloat16" : "x's dtype",
              " (as the forward saved them), got ", a.gates.scalar_type());
  TORCH_CHECK(a.output.scalar_type() == a.x.scalar_type(),
              "cellstate cpu kernel: output must have x's dtype ", a.x.scalar_type(), ", got ",
              a.output.scalar_type());
  p.b_ih = p.b_hh = std::nullopt;  // backward reads only whether there is a bias
  std::vector<Tensor> grads = AT_DISPATCH_FLOATING_TYPES(
      bf16 ? at::kFloat : a.x.scalar_type(), "cellstate_lstm_backward", [&] {
        return lstm_backward_impl<scalar_t>(
            a.d_output, a.d_h_n, a.d_c_n, a.d_records, a.x, a.h0, a.c0, a.output, a.gates,
            a.cells, saved_result(a.c_states), saved_result(a.ln_hw), saved_result(a.ln_stats), p,
            a.b_ih || a.b_hh, a.zoneout_h, a.zoneout_c, a.recurrent_mask, a.lengths,
            a.forget_gate, a.need_dx, bf16);
      });
  if (bf16) {  // each gradient in its tensor's dtype: the matrices' in bfloat16
    for (size_t k : {3, 4, 6}) {
      if (grads[k].numel()) grads[k] = grads[k].to(at::kBFloat16);
    }
  }
  // grads: x, h0, c0, w_ih, w_hh, the bias, w_hr, ...; one result per bias instead (h0: the
  // dtype computed in)
  const auto [db_ih, db_hh] = bias_grads(grads[5], a.b_ih.has_value(), a.b_hh.has_value(), a.h0);
  grads[5] = db_ih;
  grads.insert(grads.begin() + 6, db_hh);
  return grads;
}

}  // namespace

std::vector<Tensor> lstm_backward(const LSTMBackwardArgs& a) {
  if (a.x.scalar_type() != at::kBFloat16) return lstm_backward_run(a);
  // With bfloat16 matrices x and the output stay bfloat16 (the kernel reads them so).
  std::vector<Tensor> grads =
    lstm_backward_run(in_float32(a, a.w_hh.scalar_type() == at::kBFloat16));
  const std::vector<at::ScalarType> dtypes = input_dtypes(a);
  for (size_t k = 0; k < grads.size(); ++k) grads[k] = as_dtype(grads[k], dtypes[k]);
  return grads;
}

std::vector<Tensor> rnn_forward(const RNNForwardArgs& a) {
  check_inputs(a.x, {&a.h0, &a.w_ih, &a.w_hh});
  return AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "cellstate_rnn_forward", [&] {
    return rnn_forward_impl<scalar_t>(a.x, a.h0, a.w_ih, a.w_hh, a.b_ih, a.b_hh, a.lengths,
                                      a.relu);
  });
}

std::vector<Tensor> rnn_backward(const RNNBackwardArgs& a) {
  check_inputs(a.x, {&a.h0, &a.w_ih, &a.w_hh, &a.output});
  std::vector<Tensor> grads =
      AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "cellstate_rnn_backward", [&] {
        return rnn_backward_impl<scalar_t>(a.d_output, a.d_h_n, a.x, a.h0, a.output, a.w_ih,
                                           a.w_hh, a.lengths, a.relu, a.b_ih || a.b_hh,
                                           a.need_dx);
      });
  // grads: x, h0, w_ih, w_hh, the bias; one result per bias instead
  const auto [db_ih, db_hh] = bias_grads(grads[4], a.b_ih.has_value(), a.b_hh.has_value(), a.x);
  grads[4] = db_ih;
  grads.push_back(db_hh);
  return grads;
}
