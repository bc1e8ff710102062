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
// Saved for backward (forward with save=true): the activated gates (T, B, G), the cell before
// zoneout c~_t (T, B, H), the cell state after zoneout (only with zoneout on c), and for layer
// norm the normalised W_hh h (T, B, G) and per-row statistics (T, B, 5). h_{t-1} is the
// output itself. The backward runs in chunks of steps so that its gradient buffers stay small
// while the weight gradients are still large GEMMs.
//
// The kernels are one translation unit, this file, so that the per-row phases and small GEMMs
// inline into the step loops; the headers hold them by concern:
//   activations.h  sigmoid and tanh
//   gemm.h         gemm() by shape, and PackedWeight (weights packed for the per-step GEMMs)
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
#include <vector>

#include "lstm_backward.h"
#include "lstm_forward.h"
#include "rnn.h"

using at::Tensor;
using OptTensor = std::optional<Tensor>;

namespace {

void check_inputs(const Tensor& x, std::initializer_list<const Tensor*> same) {
  TORCH_CHECK(x.device().is_cpu(), "cellstate cpu kernel: tensors must be on the CPU");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "cellstate cpu kernel: float32 or float64 only, got ", x.scalar_type());
  TORCH_CHECK(x.dim() == 3 && x.size(0) > 0 && x.size(1) > 0,
              "cellstate cpu kernel: x must be (T, B, D) with T, B > 0");
  for (const Tensor* t : same) {
    TORCH_CHECK(t->scalar_type() == x.scalar_type() && t->device().is_cpu(),
                "cellstate cpu kernel: every tensor must be a CPU ", x.scalar_type(), " tensor");
  }
}

}  // namespace

// ---- entry points (bound in bindings.cpp) -------------------------------------------------

std::vector<Tensor> lstm_forward(const Tensor& x, const Tensor& h0, const Tensor& c0,
                                 const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih,
                                 const OptTensor& b_hh, const OptTensor& w_hr,
                                 const OptTensor& w_ci, const OptTensor& w_cf,
                                 const OptTensor& w_co, const OptTensor& ln_ih,
                                 const OptTensor& ln_hh, const OptTensor& ln_c_weight,
                                 const OptTensor& ln_c_bias, const OptTensor& zoneout_h,
                                 const OptTensor& zoneout_c, const OptTensor& recurrent_mask,
                                 const OptTensor& lengths, bool forget_gate, bool return_states,
                                 bool save) {
  check_inputs(x, {&h0, &c0, &w_ih, &w_hh});
  LSTMTensors p{w_ih, w_hh, b_ih, b_hh, w_hr, w_ci, w_cf, w_co, ln_ih, ln_hh, ln_c_weight,
                ln_c_bias};
  return AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cellstate_lstm_forward", [&] {
    return lstm_forward_impl<scalar_t>(x, h0, c0, p, zoneout_h, zoneout_c, recurrent_mask,
                                       lengths, forget_gate, return_states, save);
  });
}

std::vector<Tensor> lstm_backward(
    const OptTensor& grad_output, const OptTensor& grad_h_n, const OptTensor& grad_c_n,
    const OptTensor& grad_records, const Tensor& x, const Tensor& h0, const Tensor& c0,
    const Tensor& output, const Tensor& gates, const Tensor& cells, const OptTensor& c_states,
    const OptTensor& ln_hw, const OptTensor& ln_stats, const Tensor& w_ih, const Tensor& w_hh,
    bool has_bias, const OptTensor& w_hr, const OptTensor& w_ci, const OptTensor& w_cf,
    const OptTensor& w_co, const OptTensor& ln_ih, const OptTensor& ln_hh,
    const OptTensor& ln_c_weight, const OptTensor& ln_c_bias, const OptTensor& zoneout_h,
    const OptTensor& zoneout_c, const OptTensor& recurrent_mask, const OptTensor& lengths,
    bool forget_gate, bool need_dx) {
  check_inputs(x, {&h0, &c0, &w_ih, &w_hh, &output, &gates, &cells});
  LSTMTensors p{w_ih, w_hh, std::nullopt, std::nullopt, w_hr, w_ci, w_cf, w_co, ln_ih, ln_hh,
                ln_c_weight, ln_c_bias};
  return AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cellstate_lstm_backward", [&] {
    return lstm_backward_impl<scalar_t>(grad_output, grad_h_n, grad_c_n, grad_records, x, h0, c0,
                                        output, gates, cells, c_states, ln_hw, ln_stats, p,
                                        has_bias, zoneout_h, zoneout_c, recurrent_mask, lengths,
                                        forget_gate, need_dx);
  });
}

std::vector<Tensor> rnn_forward(const Tensor& x, const Tensor& h0, const Tensor& w_ih,
                                const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
                                const OptTensor& lengths, bool relu) {
  check_inputs(x, {&h0, &w_ih, &w_hh});
  return AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cellstate_rnn_forward", [&] {
    return rnn_forward_impl<scalar_t>(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, relu);
  });
}

std::vector<Tensor> rnn_backward(const OptTensor& grad_output, const OptTensor& grad_h_n,
                                 const Tensor& x, const Tensor& h0, const Tensor& output,
                                 const Tensor& w_ih, const Tensor& w_hh, const OptTensor& lengths,
                                 bool relu, bool has_bias, bool need_dx) {
  check_inputs(x, {&h0, &w_ih, &w_hh, &output});
  return AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cellstate_rnn_backward", [&] {
    return rnn_backward_impl<scalar_t>(grad_output, grad_h_n, x, h0, output, w_ih, w_hh, lengths,
                                       relu, has_bias, need_dx);
  });
}
