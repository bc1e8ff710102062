// sigmoid and tanh for the gate math of the CPU kernels (part of lstm.cpp's translation unit,
// so that the gate loops inline and vectorise them).
//
// float32: branch-free, so that g++ vectorises the gate loops (scalar expf/tanhf cost ~20 ns
// each). exp is Cephes' expf (range reduction by ln 2, degree-6 polynomial, ~1 ulp), rounded
// once also where its result is denormal; tanh is Cephes' odd polynomial below 0.625 and
// 1 - 2e / (1 + e), e = exp(-2|x|), above, so that the relative error stays ~1e-7 near 0 too.
// float64 uses the exact std:: functions. All are always_inline: a call in a gate loop would stop
// its vectorisation (g++ kept tanh as a call in the forward's larger row loops).
//
// Saturation is exact: each function returns +-1 (or 0) for precisely the inputs whose correctly
// rounded value is +-1 (or 0), and a value short of it below (tests/kernels/test_saturation.py
// checks every boundary and its neighbours against mpmath). A function that stops one ulp short
// of 1 has a derivative 1 - y^2 of 1.2e-7 instead of 0, and then the weight gradient grows with
// the input (0.12 at inputs of 1e6); one that reaches 1 early loses its gradient early. Sigmoid is
// computed from its small side, s = e / (1 + e) with e = exp(-|x|), and 1 - s for x >= 0, so that
// 1 + e never rounds the tail away.

#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace {
namespace act {

// exp(x) for x <= 0; 0 below -104 (exp(-104) < 2^-150 rounds to 0).
[[gnu::always_inline]] inline float exp_nonpositive_f32(float x) {
  x = x < -104.0f ? -104.0f : x;
  // Adding 1.5 * 2^23 rounds x / ln 2 to the nearest integer n, held in the low mantissa bits.
  const float shifted = x * 1.44269504088896341f + 12582912.0f;
  const float n = shifted - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits;
  std::memcpy(&bits, &shifted, sizeof bits);
  // 2^n built as 2^(n + 64), a normal float for n in [-150, 0], so that p * 2^(n + 64) is
  // exact and the product with 2^-64 rounds once, also to a denormal.
  bits = (bits - 0x4B400000 + 64 + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return (p * scale) * 0x1p-64f;
}

[[gnu::always_inline]] inline float sigmoid(float x) {
  const float ax = x < 0.0f ? -x : x;
  const float e = exp_nonpositive_f32(-ax);
  const float small = e / (1.0f + e);  // sigmoid(-|x|)
  const float large = 1.0f - small;
  return x >= 0.0f ? large : small;  // NaN: small, which is NaN
}

[[gnu::always_inline]] inline float tanh(float x) {
  const float z = x * x;
  float small = -5.70498872745e-3f;
  small = small * z + 2.06390887954e-2f;
  small = small * z - 5.37397155531e-2f;
  small = small * z + 1.33314422036e-1f;
  small = small * z - 3.33332819422e-1f;
  small = small * z * x + x;
  const float ax = x < 0.0f ? -x : x;
  const float e = exp_nonpositive_f32(-2.0f * ax);
  const float large = 1.0f - 2.0f * e / (1.0f + e);
  const float signed_large = x < 0.0f ? -large : large;
  return ax < 0.625f ? small : signed_large;
}

[[gnu::always_inline]] inline double sigmoid(double x) {
  const double e = std::exp(-std::fabs(x));
  const double small = e / (1.0 + e);  // sigmoid(-|x|)
  return x >= 0.0 ? 1.0 - small : small;
}
[[gnu::always_inline]] inline double tanh(double x) { return std::tanh(x); }

}  // namespace act

}  // namespace
