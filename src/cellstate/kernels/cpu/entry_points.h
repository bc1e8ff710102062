// The entry points of the CPU kernels (defined in lstm.cpp, bound to Python in bindings.cpp) and
// their arguments, declared once.
//
// Each entry point takes one struct holding its op's arguments by name. The lists below give
// the arguments in the op's order (that of cellstate.kernels.description: a layer's tensors are
// the fields of LSTMLayerParams / RNNLayerParams, then StepNoise's, then lengths); the same list
// declares the struct, unpacks a Python call into it (bindings.cpp) and names the arguments
// (argument_lists(), which tests/kernels/test_opcheck.py compares with the ops' schemas), so the
// C++ and Python orders cannot differ unnoticed. A new variant adds its tensor to the Python
// dataclass and to the list here.

#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <vector>

using at::Tensor;
using OptTensor = std::optional<Tensor>;

// X(type, name) for each argument. The types: Tensor (required), OptTensor (None allowed), bool.
#define CELLSTATE_LSTM_PARAMS(X)                                                             \
  X(Tensor, w_ih) X(Tensor, w_hh) X(OptTensor, b_ih) X(OptTensor, b_hh) X(OptTensor, w_hr)   \
  X(OptTensor, w_ci) X(OptTensor, w_cf) X(OptTensor, w_co) X(OptTensor, ln_ih)               \
  X(OptTensor, ln_hh) X(OptTensor, ln_c_weight) X(OptTensor, ln_c_bias)
#define CELLSTATE_RNN_PARAMS(X) \
  X(Tensor, w_ih) X(Tensor, w_hh) X(OptTensor, b_ih) X(OptTensor, b_hh)
#define CELLSTATE_STEP_NOISE(X) \
  X(OptTensor, zoneout_h) X(OptTensor, zoneout_c) X(OptTensor, recurrent_mask)

#define CELLSTATE_LSTM_INPUTS(X)                                                              \
  X(Tensor, x) X(Tensor, h0) X(Tensor, c0) CELLSTATE_LSTM_PARAMS(X) CELLSTATE_STEP_NOISE(X) \
  X(OptTensor, lengths)
// Forward results (in this order): output (T, B, P), h_n (B, P), c_n (B, H), records
// (5, T, B, H) and what backward reads: gates (T, B, G; bfloat16 with bfloat16 matrices),
// cells (T, B, H), c_states (T, B, H), ln_hw (T, B, G), ln_stats (T, B, 5). An absent result is
// an empty tensor.
#define CELLSTATE_LSTM_FORWARD(X) \
  CELLSTATE_LSTM_INPUTS(X) X(bool, forget_gate) X(bool, return_states) X(bool, save)
// Backward results: the gradients of x, h0, c0 and of each of CELLSTATE_LSTM_PARAMS, in order
// (empty for an absent one, and for x without need_dx).
#define CELLSTATE_LSTM_BACKWARD(X)                                                          \
  X(OptTensor, d_output) X(OptTensor, d_h_n) X(OptTensor, d_c_n) X(OptTensor, d_records)    \
  CELLSTATE_LSTM_INPUTS(X) X(Tensor, output) X(Tensor, gates) X(Tensor, cells)              \
  X(Tensor, c_states) X(Tensor, ln_hw) X(Tensor, ln_stats) X(bool, forget_gate)             \
  X(bool, need_dx)

// Forward results: output (T, B, H), h_n (B, H). Backward results: the gradients of x, h0
// and of each of CELLSTATE_RNN_PARAMS, in order.
#define CELLSTATE_RNN_INPUTS(X) \
  X(Tensor, x) X(Tensor, h0) CELLSTATE_RNN_PARAMS(X) X(OptTensor, lengths)
#define CELLSTATE_RNN_FORWARD(X) CELLSTATE_RNN_INPUTS(X) X(bool, relu)
#define CELLSTATE_RNN_BACKWARD(X)                                                           \
  X(OptTensor, d_output) X(OptTensor, d_h_n) CELLSTATE_RNN_INPUTS(X) X(Tensor, output)      \
  X(bool, relu) X(bool, need_dx)

#define CELLSTATE_FIELD(type, name) type name;
#define CELLSTATE_ARGS_STRUCT(Struct, LIST) \
  struct Struct {                           \
    LIST(CELLSTATE_FIELD)                   \
  };

CELLSTATE_ARGS_STRUCT(LSTMTensors, CELLSTATE_LSTM_PARAMS)
CELLSTATE_ARGS_STRUCT(LSTMForwardArgs, CELLSTATE_LSTM_FORWARD)
CELLSTATE_ARGS_STRUCT(LSTMBackwardArgs, CELLSTATE_LSTM_BACKWARD)
CELLSTATE_ARGS_STRUCT(RNNForwardArgs, CELLSTATE_RNN_FORWARD)
CELLSTATE_ARGS_STRUCT(RNNBackwardArgs, CELLSTATE_RNN_BACKWARD)

// The layer's parameters out of an op's arguments.
template <typename Args>
LSTMTensors lstm_tensors(const Args& a) {
#define CELLSTATE_COPY(type, name) a.name,
  return LSTMTensors{CELLSTATE_LSTM_PARAMS(CELLSTATE_COPY)};
#undef CELLSTATE_COPY
}

std::vector<Tensor> lstm_forward(const LSTMForwardArgs& a);
std::vector<Tensor> lstm_backward(const LSTMBackwardArgs& a);
std::vector<Tensor> rnn_forward(const RNNForwardArgs& a);
std::vector<Tensor> rnn_backward(const RNNBackwardArgs& a);

// Since the library loaded: how many weights the LSTM kernels packed for bfloat16 per-step
// products, how many whole-sequence products they ran on bfloat16 operands, and how many LSTM
// backward calls rounded d a to bfloat16 once for all their products (lstm_backward.h).
std::vector<int64_t> bf16_product_counts();
// Whether this torch build and CPU run them: bfloat16 brgemm (per-step products), and with it
// MKL's bfloat16 gemm (whole-sequence products). Where not, the same values in float32.
std::vector<bool> bf16_product_support();
// sigmoid(x) and tanh(x) of a float32 tensor by bf16_cell.h's vectorised math (the gate math of
// bfloat16 runs), for tests to compare with exact values; an error in builds without it.
std::vector<Tensor> bf16_cell_activations(const Tensor& x);
// Whether the bfloat16 rounding may run on AVX512-BF16 (bf16_round.h; on by default where this
// build and CPU have it; an error where not): returns the previous setting. For tests.
bool set_native_bf16(bool on);
// A float32 tensor rounded to bfloat16 as the kernel rounds (its bits, int16): by AVX512-BF16
// (native; an error where not supported), else by bf16_round.h's AVX-512F form. For tests.
Tensor bf16_round_bits(const Tensor& x, bool native);

Tensor bernoulli_mask(int64_t seed, std::vector<int64_t> shape, double p, at::ScalarType dtype);
