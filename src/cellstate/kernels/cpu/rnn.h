// The plain RNN, h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh) with act tanh or relu: forward
// and hand-written BPTT backward over one layer, one direction, the whole padded sequence (part
// of lstm.cpp's translation unit, sharing its GEMMs, schedule and backward chunks).

#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "activations.h"
#include "bptt.h"
#include "gemm.h"
#include "runtime.h"

namespace {

template <typename T, bool RELU>
[[gnu::always_inline]]
inline void rnn_activate_row(T* __restrict a, const T* __restrict bias, int64_t H) {
  for (int64_t j = 0; j < H; ++j) {
    const T v = a[j] + bias[j];
    if constexpr (RELU) {
      a[j] = v > T(0) ? v : T(0);
    } else {
      a[j] = act::tanh(v);
    }
  }
}

template <typename T>
std::vector<Tensor> rnn_forward_impl(const Tensor& x_, const Tensor& h0, const Tensor& w_ih_,
                                     const Tensor& w_hh_, const OptTensor& b_ih,
                                     const OptTensor& b_hh, const OptTensor& lengths_, bool relu) {
  const Tensor x = x_.contiguous(), w_ih = w_ih_.contiguous();
  const int64_t T_ = x.size(0), B = x.size(1), D = x.size(2), H = w_ih.size(0);
  const Tensor w_hh_t = w_hh_.t().contiguous();  // (H, H) transposed for the per-step GEMM
  Tensor bias = at::zeros({H}, x.options());
  if (b_ih) bias += *b_ih;
  if (b_hh) bias += *b_hh;
  const OptTensor lengths_c = contiguous(lengths_);
  const int64_t* lengths = lengths_c ? lengths_c->data_ptr<int64_t>() : nullptr;
  Tensor output = empty_like_shape(x, {T_, B, H});  // also the workspace of W_ih x
  Tensor h_n = h0.contiguous().clone();
  T* out_p = output.data_ptr<T>();
  T* h_p = h_n.data_ptr<T>();
  const T* bias_p = bias.data_ptr<T>();

  const Tensor w_ih_t = w_ih.t().contiguous();  // (D, H): a few input features take row updates
  gemm<T>(false, false, T_ * B, H, D, T(1), x.data_ptr<T>(), D, w_ih_t.data_ptr<T>(), H, T(0),
          out_p, H);
  const Schedule schedule(B, H * H, H * H + 10 * H, 10 * H);
  const PackedWeight<T> w_hh_t_packed(w_hh_t, B);
  auto run = [&](auto RELU_) {
    constexpr bool RELU = decltype(RELU_)::value;
    schedule.run(B, [&](int64_t b0, int64_t b1, auto rows) {
      for (int64_t t = 0; t < T_; ++t) {
        T* a_t = out_p + t * B * H;
        schedule.gemm(b0, b1, w_hh_t_packed, h_p, H, true, a_t, H);
        rows(b0, b1, [&](int64_t b) {
          T* a = a_t + b * H;
          if (!valid(lengths, t, b)) {
            std::fill(a, a + H, T(0));
            return;
          }
          rnn_activate_row<T, RELU>(a, bias_p, H);
          std::copy(a, a + H, h_p + b * H);
        });
      }
    });
  };
  if (relu) run(std::integral_constant<bool, true>{});
  else run(std::integral_constant<bool, false>{});
  return {output, h_n};
}

// da = (dh + dout) act'(a), from h = act(a): 1 - h^2 for tanh, [h > 0] for relu.
template <typename T>
[[gnu::always_inline]]
inline void rnn_activation_backward_row(int64_t H, bool relu, const T* __restrict h,
                                        const T* __restrict dh, const T* __restrict dout,
                                        T* __restrict da) {
  if (relu) {
    for (int64_t j = 0; j < H; ++j) da[j] = h[j] > T(0) ? dh[j] + dout[j] : T(0);
  } else {
    for (int64_t j = 0; j < H; ++j) da[j] = (dh[j] + dout[j]) * (T(1) - h[j] * h[j]);
  }
}

template <typename T>
std::vector<Tensor> rnn_backward_impl(const OptTensor& grad_output_, const OptTensor& grad_h_n,
                                      const Tensor& x_, const Tensor& h0_, const Tensor& output_,
                                      const Tensor& w_ih_, const Tensor& w_hh_,
                                      const OptTensor& lengths_, bool relu, bool has_bias,
                                      bool need_dx) {
  const Tensor x = x_.contiguous(), h0 = h0_.contiguous(), output = output_.contiguous();
  const Tensor w_ih = w_ih_.contiguous(), w_hh = w_hh_.contiguous();
  const int64_t T_ = x.size(0), B = x.size(1), D = x.size(2), H = w_ih.size(0);
  const OptTensor lengths_c = contiguous(lengths_);
  const int64_t* lengths = lengths_c ? lengths_c->data_ptr<int64_t>() : nullptr;
  const OptTensor grad_output_c = contiguous(grad_output_);
  const T* dout_p = ptr<T>(grad_output_c);
  const T* out_p = output.data_ptr<T>();
  const T* x_p = x.data_ptr<T>();

  Tensor dh = grad_h_n ? grad_h_n->contiguous().clone() : at::zeros({B, H}, x.options());
  Tensor dx = need_dx ? empty_like_shape(x, {T_, B, D}) : none_tensor(x);
  Tensor dw_ih = at::zeros({H, D}, x.options());
  Tensor dw_hh = at::zeros({H, H}, x.options());
  Tensor db = has_bias ? at::zeros({H}, x.options()) : none_tensor(x);
  const int64_t K = chunk_steps(T_, B, H);
  Tensor dA = empty_like_shape(x, {K, B, H});
  Tensor dh_in = empty_like_shape(x, {B, H});
  Tensor ones = at::ones({K * B}, x.options());
  Tensor zeros = at::zeros({H}, x.options());  // stands in for an absent output gradient
  const T* zero = zeros.data_ptr<T>();
  T* dh_p = dh.data_ptr<T>();
  T* dA_p = dA.data_ptr<T>();
  T* dh_in_p = dh_in.data_ptr<T>();

  const Schedule schedule(B, H * H, H * H + 10 * H, 10 * H);
  const PackedWeight<T> w_hh_packed(w_hh, B);
  for (int64_t s1 = T_; s1 > 0; s1 -= K) {
    const int64_t s0 = std::max<int64_t>(0, s1 - K);
    const int64_t R = (s1 - s0) * B;
    schedule.run(B, [&](int64_t b0, int64_t b1, auto rows) {
      for (int64_t t = s1 - 1; t >= s0; --t) {
        T* da_t = dA_p + (t - s0) * B * H;
        rows(b0, b1, [&](int64_t b) {
          T* da = da_t + b * H;
          if (!valid(lengths, t, b)) {
            std::fill(da, da + H, T(0));
            return;
          }
          const int64_t row = t * B + b;
          rnn_activation_backward_row(H, relu, out_p + row * H, dh_p + b * H,
                                      dout_p ? dout_p + row * H : zero, da);
        });
        schedule.gemm(b0, b1, w_hh_packed, da_t, H, false, dh_in_p, H);
        rows(b0, b1, [&](int64_t b) {
          if (valid(lengths, t, b)) {
            std::copy(dh_in_p + b * H, dh_in_p + (b + 1) * H, dh_p + b * H);
          }
        });
      }
    });
    add_recurrent_weight_grad(s0, s1, B, H, H, dA_p, h0.data_ptr<T>(), out_p,
                              dw_hh.data_ptr<T>());
    if (has_bias) add_bias_grad(R, H, dA_p, ones.data_ptr<T>(), db.data_ptr<T>());
    add_input_grads(R, H, D, dA_p, x_p + s0 * B * D, w_ih.data_ptr<T>(), dw_ih.data_ptr<T>(),
                    need_dx ? dx.data_ptr<T>() + s0 * B * D : nullptr);
  }
  return {dx, dh, dw_ih, dw_hh, db};
}

}  // namespace
