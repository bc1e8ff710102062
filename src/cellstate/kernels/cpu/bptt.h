// What the LSTM and RNN backward share (part of lstm.cpp's translation unit): both run backward
// through time in chunks of steps, a row loop per step, then the chunk's weight gradients as
// GEMMs over all its rows.

#pragma once

#include <algorithm>
#include <cstdint>

#include "gemm.h"

namespace {

// Steps per chunk for pre-activation gradients of `width` per row: enough rows (up to 4096)
// for efficient weight-gradient GEMMs, few enough that the chunk's gradient buffers (steps, B,
// width) stay in the low megabytes (2^21 values).
inline int64_t chunk_steps(int64_t T, int64_t B, int64_t width, int64_t max_rows = 4096) {
  return std::max<int64_t>(
    1, std::min<int64_t>({T, std::max<int64_t>(1, max_rows / B),
                          std::max<int64_t>(1, (int64_t(1) << 21) / (B * width))}));
}

// dW (G, P) += sum over the steps t of [s0, s1) of da_t^T h_{t-1}, with da the chunk's rows
// (from step s0) and h_{t-1} the output of step t - 1, or h0 at t = 0. bf16: products on
// bfloat16 operands (gemm()); operands of type A uint16_t: bfloat16 bits already.
template <typename T, typename A = T>
void add_recurrent_weight_grad(int64_t s0, int64_t s1, int64_t B, int64_t G, int64_t P,
                               const A* da, const A* h0, const A* output, T* dw,
                               bool bf16 = false) {
  int64_t rows = (s1 - s0) * B;
  const A* h_prev = output + std::max<int64_t>(0, s0 - 1) * B * P;
  if (s0 == 0) {
    gemm(true, false, G, P, B, T(1), da, G, h0, P, T(1), dw, P, bf16);
    da += B * G;
    rows -= B;
  }
  gemm(true, false, G, P, rows, T(1), da, G, h_prev, P, T(1), dw, P, bf16);
}

// db (G) += the column sums of da (R, G); ones: R ones.
template <typename T>
void add_bias_grad(int64_t R, int64_t G, const T* da, const T* ones, T* db) {
  gemm<T>(true, false, G, 1, R, T(1), da, G, ones, 1, T(1), db, 1);
}

// Through the input projection a = W_ih x over R rows: dW_ih (G, D) += da^T x, and dx = da W_ih
// (dx null: not needed). bf16: products on bfloat16 operands (gemm()); operands of type A
// uint16_t: bfloat16 bits already.
template <typename T, typename A = T>
void add_input_grads(int64_t R, int64_t G, int64_t D, const A* da, const A* x, const A* w_ih,
                     T* dw_ih, T* dx, bool bf16 = false) {
  gemm(true, false, G, D, R, T(1), da, G, x, D, T(1), dw_ih, D, bf16);
  if (dx) gemm(false, false, R, D, G, T(1), da, G, w_ih, D, T(0), dx, D, bf16);
}

}  // namespace
