// Dense products for the CPU kernels (part of lstm.cpp's translation unit, so that the small
// ones inline into the step loops): gemm() on row-major operands, which picks a plain loop, a
// narrow-product path or BLAS by shape, and PackedWeight, a weight packed once per call into
// column panels for the per-step recurrent products (oneDNN's brgemm: float32, or bfloat16
// operands with float32 accumulation).

#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/native/CPUBlas.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "bf16_round.h"

using at::Tensor;

extern "C" {
// The BLAS linked into libtorch_cpu (MKL on x86 wheels), Fortran interface. Weak, so that a
// torch build that does not export them still loads this library: gemm() then uses ATen.
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*,
            const float*, const int*, const float*, const int*, const float*, float*,
            const int*) __attribute__((weak));
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*,
            const double*, const int*, const double*, const int*, const double*, double*,
            const int*) __attribute__((weak));
// MKL's bfloat16 GEMM (bfloat16 operands as uint16 bits, float32 accumulation and C).
void gemm_bf16bf16f32_(const char*, const char*, const int*, const int*, const int*,
                       const float*, const uint16_t*, const int*, const uint16_t*, const int*,
                       const float*, float*, const int*) __attribute__((weak));
}

namespace {

// ---- GEMM ---------------------------------------------------------------------------------

inline bool blas_gemm(char ta, char tb, int m, int n, int k, float alpha, const float* a, int lda,
                      const float* b, int ldb, float beta, float* c, int ldc) {
  if (!sgemm_) return false;
  sgemm_(&ta, &tb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
  return true;
}

inline bool blas_gemm(char ta, char tb, int m, int n, int k, double alpha, const double* a,
                      int lda, const double* b, int ldb, double beta, double* c, int ldc) {
  if (!dgemm_) return false;
  dgemm_(&ta, &tb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
  return true;
}

// Below this many multiply-adds a plain loop beats a BLAS call's fixed cost (the B = 1, small H
// regime, where the per-step overhead is the whole cost).
constexpr int64_t kSmallGemm = 8192;
// Products with fewer output columns or a shorter depth than this (a few input features, a
// bias) are a handful of vectorised passes over the big operand: BLAS runs them on a slow path,
// and a micro-kernel call per weight panel costs more than the work.
constexpr int64_t kNarrow = 16;

// sum_j term(j) for j < n in 16 interleaved partial sums, so that the compiler vectorises it
// without -ffast-math (a single running sum fixes the order of additions).
template <typename T, typename Term>
inline T lane_sum(int64_t n, Term term) {
  constexpr int64_t L = 16;
  T acc[L] = {};
  int64_t j = 0;
  for (; j + L <= n; j += L) {
    for (int64_t l = 0; l < L; ++l) acc[l] += term(j + l);
  }
  T sum = 0;
  for (; j < n; ++j) sum += term(j);
  for (int64_t l = 0; l < L; ++l) sum += acc[l];
  return sum;
}

template <typename T>
inline T dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  return lane_sum<T>(n, [&](int64_t j) { return a[j] * b[j]; });
}

// y += alpha x over n values.
template <typename T>
inline void axpy(int64_t n, T alpha, const T* __restrict x, T* __restrict y) {
  for (int64_t j = 0; j < n; ++j) y[j] += alpha * x[j];
}

// Row-major C (m, n) = A (m, k) B (k, n) + beta C as k vectorised row updates per row: what a
// small k (a few input features) or a tiny product costs least as.
template <typename T>
void row_updates(int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b,
                 int64_t ldb, T beta, T* c, int64_t ldc) {
  for (int64_t r = 0; r < m; ++r) {
    T* cr = c + r * ldc;
    if (beta == T(0)) {
      std::fill(cr, cr + n, T(0));
    } else if (beta != T(1)) {
      for (int64_t j = 0; j < n; ++j) cr[j] *= beta;
    }
    for (int64_t p = 0; p < k; ++p) axpy(n, a[r * lda + p], b + p * ldb, cr);
  }
}

// Row-major C (m, n) = alpha op(A) op(B) + beta C for narrow n or k (< kNarrow), the shapes of
// a few input features: A^T B (their weight gradients, bias gradients: a column block of A per
// thread), A B with narrow n (their gradient: one dot product per output) and A B with narrow k
// (their projection: a few row updates per row). False for any other shape.
template <typename T>
bool narrow_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha,
                 const T* a, int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (trans_b || (n >= kNarrow && (k >= kNarrow || trans_a || alpha != T(1)))) return false;
  if (n >= kNarrow) {  // narrow k
    at::parallel_for(0, m, 16, [&](int64_t r0, int64_t r1) {
      row_updates(r1 - r0, n, k, a + r0 * lda, lda, b, ldb, beta, c + r0 * ldc, ldc);
    });
    return true;
  }
  auto store = [&](T* out, T value) { *out = alpha * value + (beta == T(0) ? T(0) : beta * *out); };
  if (trans_a) {  // A is stored (k, m)
    at::parallel_for(0, m, 256, [&](int64_t i0, int64_t i1) {
      const int64_t w = i1 - i0;
      std::vector<T> acc(size_t(n * w), T(0));
      for (int64_t p = 0; p < k; ++p) {
        const T* __restrict ap = a + p * lda + i0;
        for (int64_t j = 0; j < n; ++j) {
          const T bv = b[p * ldb + j];
          T* __restrict accj = acc.data() + j * w;
          for (int64_t i = 0; i < w; ++i) accj[i] += bv * ap[i];
        }
      }
      for (int64_t i = 0; i < w; ++i) {
        for (int64_t j = 0; j < n; ++j) store(c + (i0 + i) * ldc + j, acc[size_t(j * w + i)]);
      }
    });
    return true;
  }
  std::vector<T> b_t(size_t(n * k));  // B's columns as contiguous rows
  for (int64_t p = 0; p < k; ++p) {
    for (int64_t j = 0; j < n; ++j) b_t[size_t(j * k + p)] = b[p * ldb + j];
  }
  at::parallel_for(0, m, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t j = 0; j < n; ++j) {
        store(c + r * ldc + j, dot(a + r * lda, &b_t[size_t(j * k)], k));
      }
    }
  });
  return true;
}
// Whether this torch build and CPU can run the bf16 brgemm (bfloat16 operands, float32
// accumulation: AMX or AVX512-BF16; it throws where oneDNN's ukernel is unavailable): probed
// once, on a 1 x 1 x 2 product (its B in VNNI pairs of rows).
bool bf16_brgemm_works() {
#ifdef CPUBLAS_BRGEMM_BF16BF16F32
  static const bool works = [] {
    try {
      const at::BFloat16 a[2] = {2.0f, 5.0f}, b[2] = {3.0f, 7.0f};
      float c = 1.0f;
      at::native::cpublas::brgemm(1, 1, 2, 2, 1, 1, true, a, b, &c, true);
      at::native::cpublas::brgemm_release(true);
      return c == 42.0f;
    } catch (...) {
      return false;
    }
  }();
  return works;
#else
  return false;
#endif
}

// How many weights were packed for bfloat16 per-step products, and how many whole-sequence
// products ran on bfloat16 operands, since the library loaded (tests read them to know that
// these paths ran).
std::atomic<int64_t> bf16_packings{0}, bf16_gemms{0};

// Row-major C (m, n) = alpha op(A) op(B) + beta C on bfloat16 operands (their bits), accumulated
// in float32 by MKL's gemm_bf16bf16f32: the backward's whole-sequence products on operands that
// are bfloat16 already. Only where bf16_gemm_available().
inline void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                 const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, float beta,
                 float* c, int64_t ldc, bool = true) {
  if (m == 0 || n == 0 || (k == 0 && beta == 1.0f)) return;
  const char ta = trans_b ? 'T' : 'N', tb = trans_a ? 'T' : 'N';
  const int mm = int(n), nn = int(m), kk = int(k), la = int(ldb), lb = int(lda), lc = int(ldc);
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
  gemm_bf16bf16f32_(&ta, &tb, &mm, &nn, &kk, &alpha, b, &la, a, &lb, &beta, c, &lc);
  ++bf16_gemms;
}

// Whether gemm() on bfloat16 operands runs here: MKL provides it and the CPU has bfloat16
// instructions (without them MKL would emulate them slowly).
inline bool bf16_gemm_available() { return gemm_bf16bf16f32_ && bf16_brgemm_works(); }

// Row-major C (m, n) = alpha op(A) op(B) + beta C with A and B rounded to bfloat16, accumulated
// in float32 (MKL's gemm_bf16bf16f32). False where MKL does not provide it, or where this CPU has
// no bfloat16 brgemm (no bfloat16 instructions: MKL would emulate them slowly).
inline bool bf16_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                      const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                      float* c, int64_t ldc) {
  if (!bf16_gemm_available()) return false;
  // Each operand's stored rows, rounded into a contiguous copy (its leading dimension: its
  // width) in a buffer this thread keeps across calls, up to kKeptRounded values: fresh memory
  // for them at every call cost a page fault per 4 KB (training at 100x32x128x128, perf: a sixth
  // of all page faults). Larger copies are made once (not kept).
  constexpr size_t kKeptRounded = size_t(1) << 22;
  thread_local std::vector<uint16_t> a_buffer, b_buffer;
  std::vector<uint16_t> a_once, b_once;
  auto rounded = [](std::vector<uint16_t>& kept, std::vector<uint16_t>& once, const float* data,
                    int64_t rows, int64_t cols, int64_t ld) {
    const size_t size = size_t(rows * cols);
    std::vector<uint16_t>& out = size <= kKeptRounded ? kept : once;
    if (out.size() < size) out.resize(size);
    uint16_t* dst = out.data();
    at::parallel_for(0, rows, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) round_to_bf16(data + r * ld, cols, dst + r * cols);
    });
    return dst;
  };
  const uint16_t* a16 = trans_a ? rounded(a_buffer, a_once, a, k, m, lda)
                                 : rounded(a_buffer, a_once, a, m, k, lda);
  const uint16_t* b16 = trans_b ? rounded(b_buffer, b_once, b, n, k, ldb)
                                 : rounded(b_buffer, b_once, b, k, n, ldb);
  // the copies' widths as leading dimensions
  gemm(trans_a, trans_b, m, n, k, alpha, a16, trans_a ? m : k, b16, trans_b ? k : n, beta, c,
       ldc);
  return true;
}

// Row-major C (m, n) = alpha op(A) op(B) + beta C; beta = 0 overwrites C. bf16 (float only):
// large products on bfloat16 operands with float32 accumulation (bf16_gemm), as the per-step
// products of PackedWeight; small and narrow ones stay in float32.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc, bool bf16 = false) {
  if (m == 0 || n == 0 || (k == 0 && beta == T(1))) return;
  if (!trans_a && !trans_b && alpha == T(1) && m * n * k <= kSmallGemm) {
    row_updates(m, n, k, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  if (narrow_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)) return;
  if constexpr (std::is_same_v<T, float>) {
    if (bf16 && bf16_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)) {
      return;
    }
  }
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
  if (blas_gemm(trans_b ? 'T' : 'N', trans_a ? 'T' : 'N', int(n), int(m), int(k), alpha, b,
                int(ldb), a, int(lda), beta, c, int(ldc))) {
    return;
  }
  const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  auto view = [&](const T* data, int64_t rows, int64_t cols, int64_t ld, bool trans) {
    Tensor t = at::from_blob(const_cast<T*>(data), {trans ? cols : rows, trans ? rows : cols},
                             {ld, 1}, options);
    return trans ? t.t() : t;
  };
  Tensor out = at::from_blob(c, {m, n}, {ldc, 1}, options);
  out.addmm_(view(a, m, k, lda, trans_a), view(b, k, n, ldb, trans_b), beta, alpha);
}

// ---- per-step GEMMs on packed weights ------------------------------------------------------
// The recurrent GEMMs multiply a few rows by the same weight at every step. For float32 they go
// to oneDNN's JIT brgemm micro-kernel on a copy of the weight packed once per call into column
// panels [N / kPanel][K][kPanel] (the last one narrower): each panel is contiguous and small
// enough to stay in cache, which on this class of machine runs at ~100 GFLOP/s per core where
// MKL's sgemm (re-packing the weight on every call) reaches 60-90.

constexpr int64_t kPanel = 64;
// Deeper products are summed in slices of this many rows of a panel (256 KB): a whole 4096-deep
// panel (1 MB) falls out of L2 between the micro-kernel's passes over the rows of A (measured on
// M = 32, K = 4096: 154 GFLOP/s on 2 cores in one call per panel, 211 in 1024-deep slices).
constexpr int64_t kDepth = 1024;

#ifdef CPUBLAS_BRGEMM_F32F32F32
// Whether this torch build and CPU can run the f32 brgemm (it throws where oneDNN's ukernel is
// unavailable): probed once, on a 1 x 1 x 1 product.
bool brgemm_works() {
  static const bool works = [] {
    try {
      const float a = 2.0f, b = 3.0f;
      float c = 1.0f;
      at::native::cpublas::brgemm(1, 1, 1, 1, 1, 1, true, &a, &b, &c, false);
      return c == 7.0f;
    } catch (...) {
      return false;
    }
  }();
  return works;
}
#endif

// Hands back this thread's AMX tile configuration after bfloat16 brgemm products. Configuring
// the tiles costs ~10 us, so consecutive products keep them; but torch remembers the last
// configuration per thread, and any other AMX code (MKL's bfloat16 gemm, oneDNN) run on the
// thread in between would leave that memory wrong: every thread releases them before it runs
// anything else (Schedule).
inline void release_bf16_tiles() {
#ifdef CPUBLAS_BRGEMM_BF16BF16F32
  at::native::cpublas::brgemm_release(true);
#endif
}

// A right operand B (K, N), fixed across steps; packed into panels when brgemm runs it.
// With bf16 (and T float), the panels hold B in bfloat16 and multiply() rounds A's rows to
// bfloat16: products on bfloat16 operands with float32 accumulation, as oneDNN's bfloat16 LSTM
// runs them (B's values are then bfloat16 ones, held in float: the caller's bfloat16 weights).
template <typename T>
struct PackedWeight {
  const T* b;  // row-major (K, N)
  int64_t K, N;
  Tensor panels_storage;  // float32 panels [N / kPanel][K][width]; undefined: not packed
  // bfloat16 panels [N / kPanel][K2 / 2][width][2] (VNNI: pairs of rows interleaved), K2 = K
  // rounded up to even (a zero row); undefined: not packed for bfloat16 products
  Tensor vnni_storage;
  int64_t K2;

  PackedWeight() : b(nullptr), K(0), N(0), K2(0) {}
  // rows: the largest row count it will be multiplied with (tiny products skip the packing).
  PackedWeight(const Tensor& weight, int64_t rows, bool bf16 = false)
      : b(weight.data_ptr<T>()), K(weight.size(0)), N(weight.size(1)), K2((K + 1) / 2 * 2) {
    if (!std::is_same_v<T, float> || rows * K * N <= kSmallGemm || K < kNarrow) return;
#ifdef CPUBLAS_BRGEMM_BF16BF16F32
    if constexpr (std::is_same_v<T, float>) {
      if (bf16 && bf16_brgemm_works()) {
        pack_bf16(weight);
        return;
      }
    }
#endif
#ifdef CPUBLAS_BRGEMM_F32F32F32
    if (!brgemm_works()) return;
    panels_storage = at::empty({K * N}, weight.options());
    T* out = panels_storage.data_ptr<T>();
    for (int64_t n0 = 0; n0 < N; n0 += kPanel) {
      const int64_t width = std::min(kPanel, N - n0);
      for (int64_t k = 0; k < K; ++k) {
        std::copy(b + k * N + n0, b + k * N + n0 + width, out + n0 * K + k * width);
      }
    }
#endif
  }

  // The bfloat16 panels of b (T float only).
  void pack_bf16(const Tensor& weight) {
    vnni_storage = at::empty({K2 * N}, weight.options().dtype(at::kBFloat16));
    auto* out = reinterpret_cast<uint16_t*>(vnni_storage.data_ptr<at::BFloat16>());
    uint16_t pair[2][kPanel];  // rows k and k + 1 of a panel, rounded
    for (int64_t n0 = 0; n0 < N; n0 += kPanel) {
      const int64_t width = std::min(kPanel, N - n0);
      for (int64_t k = 0; k < K2; k += 2) {
        round_to_bf16(b + k * N + n0, width, pair[0]);
        if (k + 1 < K) {
          round_to_bf16(b + (k + 1) * N + n0, width, pair[1]);
        } else {
          std::fill_n(pair[1], width, uint16_t(0));
        }
        uint16_t* dst = out + n0 * K2 + k * width;  // row pair k / 2 of the panel
        for (int64_t j = 0; j < width; ++j) {
          dst[2 * j] = pair[0][j];
          dst[2 * j + 1] = pair[1][j];
        }
      }
    }
    ++bf16_packings;
  }

  // [W1^T; W2^T] (K1 + K2, N) in bfloat16 panels, packed straight from bfloat16 W1 (N, K1) and
  // W2 (N, K2) as torch stores them (the LSTM's w_ih and w_hh; T float only), for
  // multiply_stacked(): the values of the constructor's packing of their float32 transposes,
  // stacked, without making those per call (a conversion, two transposes and a concatenation
  // cost a T = 1 call more than its products). Not packed where the constructor would not pack
  // (tiny products, no bfloat16 brgemm): bf16_packed() is false, the caller multiplies in float32.
  static PackedWeight stacked_bf16(const Tensor& w1_, const Tensor& w2_, int64_t rows) {
    PackedWeight w;
    const Tensor w1 = w1_.contiguous(), w2 = w2_.contiguous();
    const int64_t K1 = w1.size(1), K2 = w2.size(1);
    w.N = w1.size(0);
    w.K = K1 + K2;
    w.K2 = (w.K + 1) / 2 * 2;
    if (!std::is_same_v<T, float> || rows * w.K * w.N <= kSmallGemm || w.K < kNarrow ||
        !bf16_brgemm_works()) {
      return w;
    }
    w.vnni_storage = at::empty({w.K2 * w.N}, w1.options());
    auto* out = reinterpret_cast<uint16_t*>(w.vnni_storage.data_ptr<at::BFloat16>());
    const auto* src1 = reinterpret_cast<const uint16_t*>(w1.data_ptr<at::BFloat16>());
    const auto* src2 = reinterpret_cast<const uint16_t*>(w2.data_ptr<at::BFloat16>());
    // Column n of [W1^T; W2^T] is row n of W1 then of W2 (and a zero), laid out contiguously;
    // its pairs of rows k, k + 1 are one 32-bit word each, at [k / 2][n - n0] in its panel.
    std::vector<uint16_t> column(size_t(w.K2), uint16_t(0));
    for (int64_t n0 = 0; n0 < w.N; n0 += kPanel) {
      const int64_t width = std::min(kPanel, w.N - n0);
      uint16_t* panel = out + n0 * w.K2;
      for (int64_t j = 0; j < width; ++j) {
        std::copy_n(src1 + (n0 + j) * K1, K1, column.begin());
        std::copy_n(src2 + (n0 + j) * K2, K2, column.begin() + K1);
        for (int64_t k = 0; k < w.K2; k += 2) {
          std::memcpy(panel + (k * width + 2 * j), &column[size_t(k)], 2 * sizeof(uint16_t));
        }
      }
    }
    ++bf16_packings;
    return w;
  }

  bool packed() const { return panels_storage.defined() || vnni_storage.defined(); }
  bool bf16_packed() const { return vnni_storage.defined(); }
  int64_t panels() const { return packed() ? (N + kPanel - 1) / kPanel : 1; }

  // C (m, N) (+)= A (m, K) B over panels [p0, p1) (all of C without packing).
  void multiply(int64_t m, int64_t p0, int64_t p1, const T* a, int64_t lda, bool add, T* c,
                int64_t ldc) const {
    if (m == 0) return;
    if (!packed() && K < kNarrow) {
      row_updates(m, N, K, a, lda, b, N, add ? T(1) : T(0), c, ldc);
      return;
    }
    if (!packed()) {
      gemm<T>(false, false, m, N, K, T(1), a, lda, b, N, add ? T(1) : T(0), c, ldc);
      return;
    }
    if constexpr (std::is_same_v<T, float>) {
      if (vnni_storage.defined()) {
        multiply_bf16(m, p0, p1, a, lda, add, c, ldc);
        return;
      }
#ifdef CPUBLAS_BRGEMM_F32F32F32
      const float* packed = panels_storage.data_ptr<float>();
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t n0 = p * kPanel, width = std::min(kPanel, N - n0);
        for (int64_t k0 = 0; k0 < K; k0 += kDepth) {
          at::native::cpublas::brgemm(m, width, std::min(kDepth, K - k0), lda, width, ldc,
                                      add || k0 > 0, a + k0, packed + n0 * K + k0 * width,
                                      c + n0, false);
        }
      }
#endif
    }
  }

  // multiply() on the bfloat16 panels: A's rows rounded to bfloat16 in a per-thread scratch
  // (K2 wide, the padding column zero). The thread must release_bf16_tiles() afterwards.
  void multiply_bf16(int64_t m, int64_t p0, int64_t p1, const float* a, int64_t lda, bool add,
                     float* c, int64_t ldc) const {
    multiply_bf16_rows(m, p0, p1, add, c, ldc, [&](int64_t r, uint16_t* row) {
      round_to_bf16(a + r * lda, K, row);
    });
  }

  // C (m, N) = [A1 A2] B over panels [p0, p1): A1 (m, k1) and A2 (m, K - k1) side by side, for
  // a B packed from two weights stacked (B1 (k1, N) over B2): A1 B1 + A2 B2 as one product per
  // panel. bfloat16 panels only (stacked_bf16()); the thread must release_bf16_tiles() after.
  // A1 float (rounded), or bfloat16 bits (copied).
  template <typename A1>
  void multiply_stacked(int64_t m, int64_t p0, int64_t p1, const A1* a1, int64_t lda1,
                        int64_t k1, const float* a2, int64_t lda2, float* c, int64_t ldc) const {
    multiply_bf16_rows(m, p0, p1, false, c, ldc, [&](int64_t r, uint16_t* row) {
      round_to_bf16(a1 + r * lda1, k1, row);
      round_to_bf16(a2 + r * lda2, K - k1, row + k1);
    });
  }

  // The bfloat16 products on rows that fill(r, row) writes (K values of row r of A, rounded).
  template <typename Fill>
  void multiply_bf16_rows(int64_t m, int64_t p0, int64_t p1, bool add, float* c, int64_t ldc,
                          Fill&& fill) const {
#ifdef CPUBLAS_BRGEMM_BF16BF16F32
    thread_local std::vector<uint16_t> rows_storage;
    rows_storage.resize(size_t(m * K2));
    for (int64_t r = 0; r < m; ++r) {
      uint16_t* row = rows_storage.data() + r * K2;
      fill(r, row);
      if (K2 > K) row[K] = 0;
    }
    const auto* rows = reinterpret_cast<const at::BFloat16*>(rows_storage.data());
    const at::BFloat16* packed = vnni_storage.data_ptr<at::BFloat16>();
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n0 = p * kPanel, width = std::min(kPanel, N - n0);
      for (int64_t k0 = 0; k0 < K2; k0 += kDepth) {
        at::native::cpublas::brgemm(m, width, std::min(kDepth, K2 - k0), K2, width, ldc,
                                    add || k0 > 0, rows + k0,
                                    packed + n0 * K2 + k0 * width, c + n0, true);
      }
    }
#endif
  }
};

}  // namespace
