// float32 <-> bfloat16 (part of lstm.cpp's translation unit): rounding to nearest even, NaN as
// 0x7FC0, as at::BFloat16(float) rounds, in three forms that give the same bits:
//   bf16_round       one value, branch-free (g++ vectorises loops of it);
//   bf16x16::round   16 lanes on AVX-512F (~8 instructions);
//   bf16x16::native  16 lanes by AVX512-BF16's vcvtneps2bf16 (one instruction and a check)
//                    where this CPU has it, checked at run time (the build's flags do not
//                    assume it).
// vcvtneps2bf16 rounds to nearest even too, but flushes denormal inputs to zero and keeps a
// NaN's sign and payload; native sends vectors with such a lane (none in a normal run: the
// values are gates, states and their products) through round, so the bits never depend on the
// CPU. Why: in a bfloat16 training forward the cell rounds four gates and the output row per
// hidden unit, and the AVX-512F rounding was ~15% of the cell's instructions.

#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace {

// v rounded to bfloat16 (to nearest even; NaN stays NaN) as its bit pattern: what
// at::BFloat16(float) gives, branch-free so that g++ vectorises loops of it (c10's conversion
// does not).
inline uint16_t bf16_round(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  return (bits & 0x7FFFFFFFu) > 0x7F800000u ? uint16_t(0x7FC0) : uint16_t(rounded);
}

// Whether this build can use AVX512-BF16: an AVX-512 build by g++ >= 10 or clang (whose
// __builtin_cpu_supports knows it).
#if defined(__AVX512F__) && (defined(__clang__) || __GNUC__ >= 10)
#define CELLSTATE_NATIVE_BF16 1
#else
#define CELLSTATE_NATIVE_BF16 0
#endif

// Whether this build and CPU have AVX512-BF16.
inline bool native_bf16_supported() {
#if CELLSTATE_NATIVE_BF16
  return __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

// Whether the bfloat16 rounding runs on AVX512-BF16: where supported, unless switched off
// (lstm.cpp's set_native_bf16: tests run both forms).
inline std::atomic<bool>& native_bf16_switch() {
  static std::atomic<bool> on{native_bf16_supported()};
  return on;
}

inline bool native_bf16() { return native_bf16_switch().load(std::memory_order_relaxed); }

#ifdef __AVX512F__
namespace bf16x16 {

// bf16_round on 16 lanes
inline __m256i round(__m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
  r = _mm512_srli_epi32(r, 16);
  r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC0));
  return _mm512_cvtepi32_epi16(r);
}

// round's bits by vcvtneps2bf16, written as assembly: the build's flags leave AVX512-BF16 out
// (the library must load on CPUs without it), and a function compiled for it (gnu::target)
// would not inline into the cell's loop. Run only where native_bf16_supported().
[[gnu::always_inline]] inline __m256i native(__m512 v) {
  // quiet NaN (0x01), signalling NaN (0x80) or denormal (0x20) lanes: the instruction's bits
  // differ there
  if (__builtin_expect(_mm512_fpclass_ps_mask(v, 0xA1) != 0, 0)) return round(v);
  __m256i bits;
  asm("vcvtneps2bf16 %1, %0" : "=v"(bits) : "v"(v));
  return bits;
}

inline void round_to_bf16_native(const float* __restrict in, int64_t n,
                                 uint16_t* __restrict out) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    _mm256_mask_storeu_epi16(out + i, k, native(_mm512_maskz_loadu_ps(k, in + i)));
  }
}

}  // namespace bf16x16
#endif

// n floats rounded to bfloat16 (bf16_round's bits; on AVX512-BF16 where native_bf16())
inline void round_to_bf16(const float* __restrict in, int64_t n, uint16_t* __restrict out) {
#ifdef __AVX512F__
  if (native_bf16()) {
    bf16x16::round_to_bf16_native(in, n, out);
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) out[i] = bf16_round(in[i]);
}

// n bfloat16 values (bits) as floats, exactly (the bits shifted into the high half).
inline void widen_bf16(const uint16_t* __restrict in, int64_t n, float* __restrict out) {
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t bits = uint32_t(in[i]) << 16;
    std::memcpy(out + i, &bits, sizeof bits);
  }
}

// n bfloat16 values (bits) as they are: rows of A that are bfloat16 already (the input x).
inline void round_to_bf16(const uint16_t* __restrict in, int64_t n, uint16_t* __restrict out) {
  std::memcpy(out, in, size_t(n) * sizeof(uint16_t));
}

}  // namespace
