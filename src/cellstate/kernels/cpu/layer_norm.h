// Layer norm over one row of the CPU kernels (part of lstm.cpp's translation unit): the row's
// statistics, the normalised values xhat = (v - mean) rstd, and the backward through
// y = xhat w (+ b). kernels/reference.py normalises W_ih x, W_hh h and c this way.

#pragma once

#include <cmath>
#include <cstdint>

#include "gemm.h"

namespace {

constexpr double kLayerNormEps = 1e-5;  // reference.LAYER_NORM_EPS

// One row's layer-norm statistics.
template <typename T>
struct RowNorm {
  T mean, rstd;
  T xhat(T v) const { return (v - mean) * rstd; }
};

// The statistics of a row of n values (two-pass, as accurate as torch's). The sums run in
// double: layer norm over a few units amplifies their rounding.
template <typename T>
inline RowNorm<T> row_norm(const T* __restrict v, int64_t n) {
  const double m = lane_sum<double>(n, [&](int64_t j) { return double(v[j]); }) / double(n);
  const double sq = lane_sum<double>(n, [&](int64_t j) { return (v[j] - m) * (v[j] - m); });
  return {T(m), T(1.0 / std::sqrt(sq / double(n) + kLayerNormEps))};
}

// y = xhat(v), in place or not.
template <typename T>
inline void normalise_row(const RowNorm<T>& norm, const T* v, int64_t n, T* y) {
  for (int64_t j = 0; j < n; ++j) y[j] = norm.xhat(v[j]);
}

// y_j = xhat_j w_j + b_j (b null: no bias) for one element.
template <typename T>
inline T affine(T xhat, const T* __restrict w, const T* __restrict b, int64_t j) {
  return xhat * w[j] + (b ? b[j] : T(0));
}

// Layer norm backward for one row: dx = rstd (dy w - mean(dy w) - xhat mean(dy w xhat)), and
// dw += dy xhat. dx may alias dy or xhat (each element is read before it is written).
template <typename T>
inline void row_layer_norm_backward(const T* dy, const T* xhat, const T* __restrict w, T rstd,
                                    int64_t n, T* dx, T* __restrict dw) {
  const T s1 = T(lane_sum<double>(n, [&](int64_t j) { return double(dy[j] * w[j]); }) / n);
  const T s2 =
    T(lane_sum<double>(n, [&](int64_t j) { return double(dy[j] * w[j] * xhat[j]); }) / n);
  for (int64_t j = 0; j < n; ++j) dw[j] += dy[j] * xhat[j];
  for (int64_t j = 0; j < n; ++j) dx[j] = rstd * (dy[j] * w[j] - s1 - xhat[j] * s2);
}

}  // namespace
