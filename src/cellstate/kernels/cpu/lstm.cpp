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

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <ATen/native/CPUBlas.h>

#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

#include "entry_points.h"

using at::Tensor;
using OptTensor = std::optional<Tensor>;

extern "C" {
// The BLAS linked into libtorch_cpu (MKL on x86 wheels), Fortran interface. Weak, so that a
// torch build that does not export them still loads this library: gemm() then uses ATen.
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*,
            const float*, const int*, const float*, const int*, const float*, float*,
            const int*) __attribute__((weak));
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*,
            const double*, const int*, const double*, const int*, const double*, double*,
            const int*) __attribute__((weak));
}

namespace {

constexpr double kLayerNormEps = 1e-5;  // reference.LAYER_NORM_EPS

// ---- activations --------------------------------------------------------------------------
// float32: branch-free, so that g++ vectorises the gate loops (scalar expf/tanhf cost ~20 ns
// each). exp is Cephes' expf (range reduction by ln 2, degree-6 polynomial, ~1 ulp), rounded
// once also where its result is denormal; tanh is Cephes' odd polynomial below 0.625 and
// 1 - 2e / (1 + e), e = exp(-2|x|), above, so that the relative error stays ~1e-7 near 0 too.
// float64 uses the exact std:: functions.
//
// Saturation is exact: each function returns +-1 (or 0) for precisely the inputs whose correctly
// rounded value is +-1 (or 0), and a value short of it below (tests/kernels/test_saturation.py
// checks every boundary and its neighbours against mpmath). A function that stops one ulp short
// of 1 has a derivative 1 - y^2 of 1.2e-7 instead of 0, and then the weight gradient grows with
// the input (0.12 at inputs of 1e6); one that reaches 1 early loses its gradient early. Sigmoid is
// computed from its small side, s = e / (1 + e) with e = exp(-|x|), and 1 - s for x >= 0, so that
// 1 + e never rounds the tail away.

namespace act {

// exp(x) for x <= 0; 0 below -104 (exp(-104) < 2^-150 rounds to 0).
inline float exp_nonpositive_f32(float x) {
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

inline float sigmoid(float x) {
  const float ax = x < 0.0f ? -x : x;
  const float e = exp_nonpositive_f32(-ax);
  const float small = e / (1.0f + e);  // sigmoid(-|x|)
  const float large = 1.0f - small;
  return x >= 0.0f ? large : small;  // NaN: small, which is NaN
}

inline float tanh(float x) {
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

inline double sigmoid(double x) {
  const double e = std::exp(-std::fabs(x));
  const double small = e / (1.0 + e);  // sigmoid(-|x|)
  return x >= 0.0 ? 1.0 - small : small;
}
inline double tanh(double x) { return std::tanh(x); }

}  // namespace act

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
// Row-major C (m, n) = alpha op(A) op(B) + beta C; beta = 0 overwrites C.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0 || (k == 0 && beta == T(1))) return;
  if (!trans_a && !trans_b && alpha == T(1) && m * n * k <= kSmallGemm) {
    row_updates(m, n, k, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  if (narrow_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)) return;
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

// A right operand B (K, N), fixed across steps; packed into panels when brgemm runs it.
template <typename T>
struct PackedWeight {
  const T* b;  // row-major (K, N)
  int64_t K, N;
  Tensor panels_storage;  // undefined: plain gemm() on b

  PackedWeight() : b(nullptr), K(0), N(0) {}
  // rows: the largest row count it will be multiplied with (tiny products skip the packing).
  PackedWeight(const Tensor& weight, int64_t rows)
      : b(weight.data_ptr<T>()), K(weight.size(0)), N(weight.size(1)) {
#ifdef CPUBLAS_BRGEMM_F32F32F32
    if (!std::is_same_v<T, float> || rows * K * N <= kSmallGemm || K < kNarrow ||
        !brgemm_works()) {
      return;
    }
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
  int64_t panels() const { return panels_storage.defined() ? (N + kPanel - 1) / kPanel : 1; }

  // C (m, N) (+)= A (m, K) B over panels [p0, p1) (all of C without packing).
  void multiply(int64_t m, int64_t p0, int64_t p1, const T* a, int64_t lda, bool add, T* c,
                int64_t ldc) const {
    if (m == 0) return;
    if (!panels_storage.defined() && K < kNarrow) {
      row_updates(m, N, K, a, lda, b, N, add ? T(1) : T(0), c, ldc);
      return;
    }
    if (!panels_storage.defined()) {
      gemm<T>(false, false, m, N, K, T(1), a, lda, b, N, add ? T(1) : T(0), c, ldc);
      return;
    }
#ifdef CPUBLAS_BRGEMM_F32F32F32
    if constexpr (std::is_same_v<T, float>) {
      const float* packed = panels_storage.data_ptr<float>();
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t n0 = p * kPanel, width = std::min(kPanel, N - n0);
        for (int64_t k0 = 0; k0 < K; k0 += kDepth) {
          at::native::cpublas::brgemm(m, width, std::min(kDepth, K - k0), lda, width, ldc,
                                      add || k0 > 0, a + k0, packed + n0 * K + k0 * width,
                                      c + n0, false);
        }
      }
    }
#endif
  }
};

// ---- small helpers ------------------------------------------------------------------------

template <typename T>
const T* ptr(const OptTensor& t) {
  return t.has_value() && t->defined() ? t->data_ptr<T>() : nullptr;
}

OptTensor contiguous(const OptTensor& t) {
  if (!t.has_value() || !t->defined()) return std::nullopt;
  return t->contiguous();
}

Tensor empty_like_shape(const Tensor& like, at::IntArrayRef shape) {
  return at::empty(shape, like.options());
}

Tensor none_tensor(const Tensor& like) { return at::empty({0}, like.options()); }

// What forward saves for backward, (T, B, G) and the like, is large and short-lived: fresh
// memory at every training step costs a page fault and a page of zeroing per 4 KB (~20k faults
// per step at T=100, B=32, H=1024). So large blocks are 2 MB-aligned, advised for transparent
// huge pages, and kept when freed for the next step of the same shapes, up to kKeptBytes in all
// (the saved tensors of about one training step; all are released when a size is not found).
// Not for the output, which must behave as torch.nn.LSTM's: this storage is not resizable. The
// per-step states of return_states (no torch.nn counterpart) do use it.
class SavedMemory {
 public:
  static constexpr size_t kHugePage = size_t(1) << 21;
  static constexpr size_t kKeptBytes = size_t(1) << 30;

  static void* take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto it = kept_.begin(); it != kept_.end(); ++it) {
        if (it->first == bytes) {
          void* data = it->second;
          kept_bytes_ -= bytes;
          kept_.erase(it);
          return data;
        }
      }
      // No block of this size: the shapes changed, and what is kept would only sit idle.
      for (const auto& block : kept_) std::free(block.second);
      kept_.clear();
      kept_bytes_ = 0;
    }
    void* data = std::aligned_alloc(kHugePage, bytes);
#ifdef MADV_HUGEPAGE
    if (data != nullptr) madvise(data, bytes, MADV_HUGEPAGE);
#endif
    return data;
  }

  static void give_back(void* data, size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (kept_bytes_ + bytes > kKeptBytes) {
      std::free(data);
      return;
    }
    kept_.emplace_back(bytes, data);
    kept_bytes_ += bytes;
  }

 private:
  static inline std::mutex mutex_;
  static inline std::vector<std::pair<size_t, void*>> kept_;
  static inline size_t kept_bytes_ = 0;
};

Tensor saved_empty(const Tensor& like, at::IntArrayRef shape) {
  constexpr size_t kPage = SavedMemory::kHugePage;
  const size_t bytes = size_t(c10::multiply_integers(shape)) * like.element_size();
  if (bytes < 4 * kPage) return at::empty(shape, like.options());
  const size_t rounded = (bytes + kPage - 1) / kPage * kPage;
  void* data = SavedMemory::take(rounded);
  if (data == nullptr) return at::empty(shape, like.options());
  return at::from_blob(
    data, shape, [rounded](void* p) { SavedMemory::give_back(p, rounded); }, like.options());
}

// A zoneout input: a 0/1 mask (T, B, X), or a 0-dim probability (evaluation), or absent.
template <typename T>
struct Zoneout {
  const T* data = nullptr;
  int64_t step = 0;  // elements per step (0 for the scalar, whose row is expanded)
  Tensor storage;

  Zoneout(const OptTensor& z, int64_t B, int64_t X) {
    if (!z.has_value() || !z->defined()) return;
    if (z->dim() == 0) {
      storage = z->expand({B, X}).contiguous();  // one row per sequence, the same at every step
    } else {
      storage = z->contiguous();
      step = B * X;
    }
    data = storage.data_ptr<T>();
  }
  explicit operator bool() const { return data != nullptr; }
  const T* row(int64_t t, int64_t b, int64_t X) const { return data + t * step + b * X; }
};

// Per-row layer norm statistics over n values (two-pass, as accurate as torch's).
// The sums run in double: layer norm over a few units amplifies their rounding.
template <typename T>
inline void row_moments(const T* __restrict v, int64_t n, T& mean, T& rstd) {
  const double m = lane_sum<double>(n, [&](int64_t j) { return double(v[j]); }) / double(n);
  const double sq = lane_sum<double>(n, [&](int64_t j) { return (v[j] - m) * (v[j] - m); });
  mean = T(m);
  rstd = T(1.0 / std::sqrt(sq / double(n) + kLayerNormEps));
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

// Per-thread accumulators for reductions done inside the parallel row loops (summed at the
// end, in thread order, so a given thread count gives the same result every run).
template <typename T>
struct ThreadSums {
  int64_t size;
  std::vector<T> data;
  explicit ThreadSums(int64_t n) : size(n), data(size_t(at::get_num_threads() * n), T(0)) {}
  T* mine() { return data.data() + at::get_thread_num() * size; }
  void add_to(T* out) const {
    for (size_t k = 0; k < data.size(); ++k) out[k % size] += data[k];
  }
};

// How a recurrence is spread over threads. Sequences are independent, so by default each thread
// runs the whole recurrence for its own block of rows: one fork-join per call, with the recurrent
// weights resident in that core's L2. Once the weights outgrow L2, every thread would stream all
// of them at every step; then the steps run in order, each GEMM threaded by BLAS over the whole
// batch, and only the row-wise math is split across threads.
// Recurrent weights up to this many elements (1 MB of float32) stay in a core's L2 across steps.
constexpr int64_t kL2Weights = int64_t(1) << 18;

struct Schedule {
  bool per_step;
  int64_t grain;       // rows per task when each thread runs whole recurrences
  int64_t step_grain;  // rows per task for the row-wise math of one step

  // weights: elements of the recurrent weight matrix; row_work, step_row_work: rough cost of one
  // row of one step, with and without its GEMM.
  Schedule(int64_t B, int64_t weights, int64_t row_work, int64_t step_row_work)
      : per_step(weights > kL2Weights && at::get_num_threads() > 1 && !at::in_parallel_region()),
        grain(B * row_work >= 32768 ? 1 : B),
        step_grain(B * step_row_work >= 32768 ? 1 : B) {}

  // C (rows b0..b1) (+)= A (rows b0..b1) W, for a and c at row 0: per step, W's panels are
  // split across threads (or BLAS threads the GEMM); otherwise the caller's thread does it all.
  template <typename T>
  void gemm(int64_t b0, int64_t b1, const PackedWeight<T>& w, const T* a, int64_t lda, bool add,
            T* c, int64_t ldc) const {
    const T* a_rows = a + b0 * lda;
    T* c_rows = c + b0 * ldc;
    if (per_step && w.panels() > 1) {
      at::parallel_for(0, w.panels(), 1, [&](int64_t p0, int64_t p1) {
        w.multiply(b1 - b0, p0, p1, a_rows, lda, add, c_rows, ldc);
      });
    } else {
      w.multiply(b1 - b0, 0, w.panels(), a_rows, lda, add, c_rows, ldc);
    }
  }

  // C = A1 W1 + A2 W2 (rows b0..b1) with one fork-join per step: each panel's two products back
  // to back on one thread.
  template <typename T>
  void gemm_sum(int64_t b0, int64_t b1, const PackedWeight<T>& w1, const T* a1, int64_t lda1,
                const PackedWeight<T>& w2, const T* a2, int64_t lda2, T* c, int64_t ldc) const {
    if (per_step && w1.panels() > 1 && w1.panels() == w2.panels()) {
      const int64_t m = b1 - b0;
      T* c_rows = c + b0 * ldc;
      at::parallel_for(0, w1.panels(), 1, [&](int64_t p0, int64_t p1) {
        w1.multiply(m, p0, p1, a1 + b0 * lda1, lda1, false, c_rows, ldc);
        w2.multiply(m, p0, p1, a2 + b0 * lda2, lda2, true, c_rows, ldc);
      });
    } else {
      gemm(b0, b1, w1, a1, lda1, false, c, ldc);
      gemm(b0, b1, w2, a2, lda2, true, c, ldc);
    }
  }

  // body(b0, b1, rows) runs the steps for rows [b0, b1); rows(r0, r1, f) runs a row-wise loop.
  template <typename Body>
  void run(int64_t B, Body&& body) const {
    if (per_step) {
      const int64_t g = step_grain;
      body(int64_t(0), B,
           [g](int64_t r0, int64_t r1, auto&& f) { at::parallel_for(r0, r1, g, f); });
    } else {
      at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
        body(b0, b1, [](int64_t r0, int64_t r1, auto&& f) { f(r0, r1); });
      });
    }
  }
};

bool valid(const int64_t* lengths, int64_t t, int64_t b) {
  return lengths == nullptr || t < lengths[b];
}

// ============================================================================================
// LSTM
// ============================================================================================

struct LSTMShape {
  int64_t T, B, D, H, P, G;
  bool forget_gate;
  int64_t gi() const { return 0; }
  int64_t gf() const { return H; }  // only with a forget gate
  int64_t gg() const { return (forget_gate ? 2 : 1) * H; }
  int64_t go() const { return (forget_gate ? 3 : 2) * H; }
};

// x (T, B, D), w_ih (G, D), w_hh (G, P); G = 4H, or 3H without a forget gate.
inline LSTMShape lstm_shape(const Tensor& x, const Tensor& w_ih, const Tensor& w_hh,
                            bool forget_gate) {
  const int64_t G = w_ih.size(0);
  const int64_t H = G / (forget_gate ? 4 : 3);
  return LSTMShape{x.size(0), x.size(1), x.size(2), H, w_hh.size(1), G, forget_gate};
}

// Layer-norm statistics saved per row: (mean, rstd) of W_ih x, rstd of W_hh h, (mean, rstd) of c.
enum Stat { kMeanIH, kRstdIH, kRstdHH, kMeanC, kRstdC, kStats };

template <typename T>
struct LSTMParams {
  const T* w_ih;          // (G, D)
  Tensor w_hh_t_storage;  // (P, G): the forward's per-step GEMMs multiply by W_hh^T
  const T* w_hr;          // (P, H) or null
  Tensor w_hr_t_storage;  // (H, P)
  Tensor bias_storage;    // (G,) b_ih + b_hh (zeros without biases)
  const T* bias;
  const T *w_ci, *w_cf, *w_co;               // (H,) peepholes or null
  const T *ln_ih, *ln_hh, *ln_c_w, *ln_c_b;  // layer-norm gains (G, G, H) and bias (H) or null
};

template <typename T>
LSTMParams<T> lstm_params(LSTMTensors& p, const LSTMShape& s) {
  LSTMParams<T> q;
  p.w_ih = p.w_ih.contiguous();
  p.w_hh = p.w_hh.contiguous();
  for (OptTensor* t : {&p.b_ih, &p.b_hh, &p.w_hr, &p.w_ci, &p.w_cf, &p.w_co, &p.ln_ih, &p.ln_hh,
                       &p.ln_c_weight, &p.ln_c_bias}) {
    *t = contiguous(*t);
  }
  q.w_ih = p.w_ih.data_ptr<T>();
  q.w_hh_t_storage = p.w_hh.t().contiguous();
  q.w_hr = ptr<T>(p.w_hr);
  if (q.w_hr) q.w_hr_t_storage = p.w_hr->t().contiguous();
  q.bias_storage = at::zeros({s.G}, p.w_ih.options());
  if (p.b_ih) q.bias_storage += *p.b_ih;
  if (p.b_hh) q.bias_storage += *p.b_hh;
  q.bias = q.bias_storage.template data_ptr<T>();
  q.w_ci = ptr<T>(p.w_ci);
  q.w_cf = ptr<T>(p.w_cf);
  q.w_co = ptr<T>(p.w_co);
  q.ln_ih = ptr<T>(p.ln_ih);
  q.ln_hh = ptr<T>(p.ln_hh);
  q.ln_c_w = ptr<T>(p.ln_c_weight);
  q.ln_c_b = ptr<T>(p.ln_c_bias);
  return q;
}

// Runs f with compile-time flags for the two variants that change the gate loop itself, so
// that each combination gets its own branch-free, vectorised loop.
template <typename F>
void with_cell(bool forget_gate, bool peephole, F&& f) {
  using std::integral_constant;
  if (forget_gate) {
    if (peephole) f(integral_constant<bool, true>{}, integral_constant<bool, true>{});
    else f(integral_constant<bool, true>{}, integral_constant<bool, false>{});
  } else {
    if (peephole) f(integral_constant<bool, false>{}, integral_constant<bool, true>{});
    else f(integral_constant<bool, false>{}, integral_constant<bool, false>{});
  }
}

// One row of the cell: a (G) pre-activations without bias -> activated gates, in place;
// c_new = f c_prev + i g.
template <typename T, bool FG, bool PEEP>
inline void cell_forward_row(const LSTMShape& s, const LSTMParams<T>& q, T* __restrict a,
                             const T* __restrict c_prev, T* __restrict c_new) {
  const int64_t H = s.H;
  T* __restrict ai = a + s.gi();
  T* __restrict af = a + s.gf();
  T* __restrict ag = a + s.gg();
  T* __restrict ao = a + s.go();
  const T* __restrict bi = q.bias + s.gi();
  const T* __restrict bf = q.bias + s.gf();
  const T* __restrict bg = q.bias + s.gg();
  const T* __restrict bo = q.bias + s.go();
  const T* __restrict w_ci = q.w_ci;
  const T* __restrict w_cf = q.w_cf;
  const T* __restrict w_co = q.w_co;
  for (int64_t j = 0; j < H; ++j) {
    const T cp = c_prev[j];
    const T i = act::sigmoid(ai[j] + bi[j] + (PEEP ? w_ci[j] * cp : T(0)));
    const T g = act::tanh(ag[j] + bg[j]);
    T c;
    if constexpr (FG) {
      const T f = act::sigmoid(af[j] + bf[j] + (PEEP ? w_cf[j] * cp : T(0)));
      af[j] = f;
      c = f * cp + i * g;
    } else {
      c = cp + i * g;  // the constant error carousel of 1997
    }
    const T o = act::sigmoid(ao[j] + bo[j] + (PEEP ? w_co[j] * c : T(0)));
    ai[j] = i;
    ag[j] = g;
    ao[j] = o;
    c_new[j] = c;
  }
}

template <typename T>
std::vector<Tensor> lstm_forward_impl(const Tensor& x_, const Tensor& h0, const Tensor& c0,
                                      LSTMTensors& tensors, const OptTensor& zoneout_h,
                                      const OptTensor& zoneout_c, const OptTensor& mask_,
                                      const OptTensor& lengths_, bool forget_gate,
                                      bool return_states, bool save) {
  const Tensor x = x_.contiguous();
  const LSTMShape s = lstm_shape(x, tensors.w_ih, tensors.w_hh, forget_gate);
  const auto [T_, B, D, H, P, G] = std::tuple{s.T, s.B, s.D, s.H, s.P, s.G};
  const LSTMParams<T> q = lstm_params<T>(tensors, s);
  const bool proj = q.w_hr != nullptr;
  const bool any_ln = q.ln_ih || q.ln_hh || q.ln_c_w;
  const Zoneout<T> zh(zoneout_h, B, P), zc(zoneout_c, B, H);
  const OptTensor mask_c = contiguous(mask_);
  const T* mask = ptr<T>(mask_c);  // (B, P) recurrent dropout
  const OptTensor lengths_c = contiguous(lengths_);
  const int64_t* lengths = lengths_c ? lengths_c->data_ptr<int64_t>() : nullptr;

  Tensor output = empty_like_shape(x, {T_, B, P});
  Tensor h_n = h0.contiguous().clone();  // (B, P): the running state, updated in place
  Tensor c_n = c0.contiguous().clone();  // (B, H)
  // gates holds each step's pre-activations, then its activated gates: every step with save
  // (backward needs them), else one reused, cache-resident step.
  Tensor gates = saved_empty(x, {save ? T_ : 1, B, G});
  Tensor cells = save ? saved_empty(x, {T_, B, H}) : empty_like_shape(x, {B, H});
  Tensor c_states = save && zc ? saved_empty(x, {T_, B, H}) : none_tensor(x);
  Tensor ln_hw = q.ln_hh ? saved_empty(x, {save ? T_ : 1, B, G}) : none_tensor(x);
  Tensor ln_stats = any_ln ? empty_like_shape(x, {save ? T_ : 1, B, kStats}) : none_tensor(x);
  Tensor records = return_states ? saved_empty(x, {5, T_, B, H}) : none_tensor(x);
  Tensor hh_buf = proj ? empty_like_shape(x, {B, H}) : none_tensor(x);      // o * tanh(c)
  Tensor h_new_buf = empty_like_shape(x, {B, P});                            // before zoneout
  Tensor h_in_buf = mask ? empty_like_shape(x, {B, P}) : none_tensor(x);    // h * mask

  const T* x_p = x.data_ptr<T>();
  T* gates_p = gates.data_ptr<T>();
  T* out_p = output.data_ptr<T>();
  T* h_p = h_n.data_ptr<T>();
  T* c_p = c_n.data_ptr<T>();
  T* cells_p = cells.data_ptr<T>();
  T* c_states_p = save && zc ? c_states.data_ptr<T>() : nullptr;
  T* ln_hw_p = q.ln_hh ? ln_hw.data_ptr<T>() : nullptr;
  T* stats_p = any_ln ? ln_stats.data_ptr<T>() : nullptr;
  T* rec_p = return_states ? records.data_ptr<T>() : nullptr;
  T* hh_p = proj ? hh_buf.data_ptr<T>() : h_new_buf.data_ptr<T>();
  T* h_new_p = h_new_buf.data_ptr<T>();
  T* h_in_p = mask ? h_in_buf.data_ptr<T>() : h_p;
  const int64_t TBH = T_ * B * H;
  // Saved tensors are indexed by step; their single-step scratch versions by step 0.
  auto at_step = [&](int64_t t) { return save ? t : 0; };

  const Schedule schedule(B, G * (D + P), G * (D + P) + (proj ? H * P : 0) + 20 * H, 20 * H);
  const Tensor w_ih_t_storage = tensors.w_ih.t().contiguous();  // (D, G)
  const PackedWeight<T> w_ih_t(w_ih_t_storage, B);
  const PackedWeight<T> w_hh_t(q.w_hh_t_storage, B);  // (P, G)
  const PackedWeight<T> w_hr_t = proj ? PackedWeight<T>(q.w_hr_t_storage, B) : PackedWeight<T>();
  // The input projection of each step is computed with its recurrent GEMM, on the same rows and
  // weight panels (rather than one whole-sequence GEMM up front): no (T, B, G) pass through
  // memory in inference, and no BLAS call while the other threads wait.
  const bool separate_projections = q.ln_ih || q.ln_hh;  // layer norm normalises each one
  with_cell(forget_gate, q.w_ci != nullptr, [&](auto FG_, auto PEEP_) {
    constexpr bool FG = decltype(FG_)::value;
    constexpr bool PEEP = decltype(PEEP_)::value;
    schedule.run(B, [&](int64_t b0, int64_t b1, auto rows) {
      for (int64_t t = 0; t < T_; ++t) {
        T* a_t = gates_p + at_step(t) * B * G;
        const T* x_t = x_p + t * B * D;
        if (mask) {
          for (int64_t k = b0 * P; k < b1 * P; ++k) h_in_p[k] = h_p[k] * mask[k];
        }
        if (!separate_projections) {
          // a = W_ih x_t + W_hh h_{t-1}
          schedule.gemm_sum(b0, b1, w_ih_t, x_t, D, w_hh_t, h_in_p, P, a_t, G);
        } else {
          schedule.gemm(b0, b1, w_ih_t, x_t, D, false, a_t, G);
        }
        if (q.ln_ih) {
          rows(b0, b1, [&](int64_t r0, int64_t r1) {
            for (int64_t b = r0; b < r1; ++b) {
              T* a = a_t + b * G;
              T mean, rstd;
              row_moments(a, G, mean, rstd);
              for (int64_t j = 0; j < G; ++j) a[j] = (a[j] - mean) * rstd * q.ln_ih[j];
              T* st = stats_p + (at_step(t) * B + b) * kStats;
              st[kMeanIH] = mean;
              st[kRstdIH] = rstd;
            }
          });
        }
        // a += W_hh h_{t-1}, or its layer norm
        if (q.ln_hh) {
          T* hw = ln_hw_p + at_step(t) * B * G;
          schedule.gemm(b0, b1, w_hh_t, h_in_p, P, false, hw, G);
          rows(b0, b1, [&](int64_t r0, int64_t r1) {
            for (int64_t b = r0; b < r1; ++b) {
              if (!valid(lengths, t, b)) continue;
              T* hw_b = hw + b * G;
              T* a = a_t + b * G;
              T mean, rstd;
              row_moments(hw_b, G, mean, rstd);
              for (int64_t j = 0; j < G; ++j) {
                hw_b[j] = (hw_b[j] - mean) * rstd;
                a[j] += q.ln_hh[j] * hw_b[j];
              }
              stats_p[(at_step(t) * B + b) * kStats + kRstdHH] = rstd;
            }
          });
        } else if (separate_projections) {
          schedule.gemm(b0, b1, w_hh_t, h_in_p, P, true, a_t, G);
        }
        // gates, c~_t and o * tanh(c~_t)
        T* cells_t = cells_p + at_step(t) * B * H;
        rows(b0, b1, [&](int64_t r0, int64_t r1) {
          for (int64_t b = r0; b < r1; ++b) {
            T* hh = hh_p + b * H;
            if (!valid(lengths, t, b)) {
              std::fill(hh, hh + H, T(0));  // keeps the projection GEMM below finite
              continue;
            }
            T* a = a_t + b * G;
            const T* c_prev = c_p + b * H;
            T* c_new = cells_t + b * H;
            cell_forward_row<T, FG, PEEP>(s, q, a, c_prev, c_new);
            const T* o = a + s.go();
            if (q.ln_c_w) {
              T mean, rstd;
              row_moments(c_new, H, mean, rstd);
              for (int64_t j = 0; j < H; ++j) {
                const T shown =
                  (c_new[j] - mean) * rstd * q.ln_c_w[j] + (q.ln_c_b ? q.ln_c_b[j] : T(0));
                hh[j] = o[j] * act::tanh(shown);
              }
              T* st = stats_p + (at_step(t) * B + b) * kStats;
              st[kMeanC] = mean;
              st[kRstdC] = rstd;
            } else {
              for (int64_t j = 0; j < H; ++j) hh[j] = o[j] * act::tanh(c_new[j]);
            }
          }
        });
        if (proj) {
          schedule.gemm(b0, b1, w_hr_t, hh_p, H, false, h_new_p, P);
        }
        // zoneout, lengths, output and records
        T* out_t = out_p + t * B * P;
        rows(b0, b1, [&](int64_t r0, int64_t r1) {
          for (int64_t b = r0; b < r1; ++b) {
            T* out = out_t + b * P;
            const bool ok = valid(lengths, t, b);
            if (!ok) {
              std::fill(out, out + P, T(0));
            } else {
              T* h = h_p + b * P;
              const T* h_new = h_new_p + b * P;
              if (zh) {
                const T* z = zh.row(t, b, P);
                for (int64_t j = 0; j < P; ++j) h[j] = z[j] * h[j] + (T(1) - z[j]) * h_new[j];
              } else {
                std::copy(h_new, h_new + P, h);
              }
              std::copy(h, h + P, out);
              T* c = c_p + b * H;
              const T* c_new = cells_t + b * H;
              if (zc) {
                const T* z = zc.row(t, b, H);
                for (int64_t j = 0; j < H; ++j) c[j] = z[j] * c[j] + (T(1) - z[j]) * c_new[j];
                if (c_states_p) std::copy(c, c + H, c_states_p + (t * B + b) * H);
              } else {
                std::copy(c_new, c_new + H, c);
              }
            }
            if (rec_p) {
              const int64_t row = (t * B + b) * H;
              T* rec_c = rec_p + row;
              T* rec_i = rec_p + TBH + row;
              T* rec_f = rec_p + 2 * TBH + row;
              T* rec_g = rec_p + 3 * TBH + row;
              T* rec_o = rec_p + 4 * TBH + row;
              if (!ok) {
                for (T* r : {rec_c, rec_i, rec_f, rec_g, rec_o}) std::fill(r, r + H, T(0));
                continue;
              }
              const T* a = a_t + b * G;
              std::copy(c_p + b * H, c_p + (b + 1) * H, rec_c);
              std::copy(a + s.gi(), a + s.gi() + H, rec_i);
              if (forget_gate) {
                std::copy(a + s.gf(), a + s.gf() + H, rec_f);
              } else {
                std::fill(rec_f, rec_f + H, T(1));
              }
              std::copy(a + s.gg(), a + s.gg() + H, rec_g);
              std::copy(a + s.go(), a + s.go() + H, rec_o);
            }
          }
        });
      }
    });
  });
  if (!save) {
    gates = none_tensor(x);
    cells = none_tensor(x);
    ln_hw = none_tensor(x);
    ln_stats = none_tensor(x);
  }
  return {output, h_n, c_n, records, gates, cells, c_states, ln_hw, ln_stats};
}

// dh_t through zoneout: keep = z dh (to h_{t-1}), dhn = (1 - z) dh (to h~_t); dh includes the
// output's gradient.
template <typename T>
inline void zoneout_backward_row(int64_t P, const T* __restrict dh, const T* __restrict dout,
                                 const T* __restrict z, T* __restrict keep, T* __restrict dhn) {
  for (int64_t j = 0; j < P; ++j) {
    const T d = dh[j] + dout[j];
    keep[j] = z[j] * d;
    dhn[j] = (T(1) - z[j]) * d;
  }
}

// Through h~ = o tanh(c_shown): hh = o tanh(c_shown) (for W_hr's gradient), d a_o, and dcs,
// the gradient of c_shown.
template <typename T>
inline void output_backward_row(int64_t H, const T* __restrict c_shown, const T* __restrict o,
                                const T* __restrict dhh, const T* __restrict drec_o,
                                T* __restrict hh, T* __restrict da_o, T* __restrict dcs) {
  for (int64_t j = 0; j < H; ++j) {
    const T th = act::tanh(c_shown[j]);
    hh[j] = o[j] * th;
    const T d_o = dhh[j] * th + drec_o[j];
    da_o[j] = d_o * o[j] * (T(1) - o[j]);
    dcs[j] = dhh[j] * o[j] * (T(1) - th * th);
  }
}

// Through the cell: dcs is d c~_t via h, dc (in: d c_t, out: d c_{t-1}); writes d a_i, d a_f,
// d a_g (d a_o is already in da) and accumulates the peephole gradients.
template <typename T, bool FG, bool PEEP>
inline void gate_backward_row(const LSTMShape& s, const LSTMParams<T>& q, const T* a,
                              const T* __restrict c_prev, const T* __restrict c_new,
                              const T* __restrict dcs, const T* __restrict z,
                              const T* __restrict rec_c, const T* __restrict rec_i,
                              const T* __restrict rec_f, const T* __restrict rec_g,
                              T* __restrict dc, T* da, T* peep_acc) {
  const int64_t H = s.H;
  const T* __restrict gi = a + s.gi();
  const T* __restrict gf = a + s.gf();
  const T* __restrict gg = a + s.gg();
  T* __restrict dai = da + s.gi();
  T* __restrict daf = da + s.gf();
  T* __restrict dag = da + s.gg();
  const T* __restrict dao = da + s.go();
  const T* __restrict w_ci = q.w_ci;
  const T* __restrict w_cf = q.w_cf;
  const T* __restrict w_co = q.w_co;
  T* __restrict dw_ci = peep_acc;
  T* __restrict dw_cf = peep_acc + H;
  T* __restrict dw_co = peep_acc + 2 * H;
  for (int64_t j = 0; j < H; ++j) {
    const T dcz = dc[j] + rec_c[j];  // d c_t after zoneout
    T dcn = (T(1) - z[j]) * dcz + dcs[j];
    if constexpr (PEEP) dcn += dao[j] * w_co[j];
    const T da_i = (dcn * gg[j] + rec_i[j]) * gi[j] * (T(1) - gi[j]);
    dai[j] = da_i;
    dag[j] = (dcn * gi[j] + rec_g[j]) * (T(1) - gg[j] * gg[j]);
    T dcp = z[j] * dcz;
    if constexpr (FG) {
      const T da_f = (dcn * c_prev[j] + rec_f[j]) * gf[j] * (T(1) - gf[j]);
      daf[j] = da_f;
      dcp += dcn * gf[j];
      if constexpr (PEEP) {
        dcp += da_f * w_cf[j];
        dw_cf[j] += da_f * c_prev[j];
      }
    } else {
      dcp += dcn;
    }
    if constexpr (PEEP) {
      dcp += da_i * w_ci[j];
      dw_ci[j] += da_i * c_prev[j];
      dw_co[j] += dao[j] * c_new[j];
    }
    dc[j] = dcp;
  }
}

template <typename T>
std::vector<Tensor> lstm_backward_impl(
    const OptTensor& grad_output_, const OptTensor& grad_h_n, const OptTensor& grad_c_n,
    const OptTensor& grad_records_, const Tensor& x_, const Tensor& h0_, const Tensor& c0_,
    const Tensor& output_, const Tensor& gates_, const Tensor& cells_,
    const OptTensor& c_states_, const OptTensor& ln_hw_, const OptTensor& ln_stats_,
    LSTMTensors& tensors, bool has_bias, const OptTensor& zoneout_h, const OptTensor& zoneout_c,
    const OptTensor& mask_, const OptTensor& lengths_, bool forget_gate, bool need_dx) {
  const Tensor x = x_.contiguous(), h0 = h0_.contiguous(), c0 = c0_.contiguous();
  const Tensor output = output_.contiguous(), gates = gates_.contiguous();
  const Tensor cells = cells_.contiguous();
  const LSTMShape s = lstm_shape(x, tensors.w_ih, tensors.w_hh, forget_gate);
  const auto [T_, B, D, H, P, G] = std::tuple{s.T, s.B, s.D, s.H, s.P, s.G};
  const LSTMParams<T> q = lstm_params<T>(tensors, s);
  const bool proj = q.w_hr != nullptr;
  const Zoneout<T> zh(zoneout_h, B, P), zc(zoneout_c, B, H);
  const OptTensor mask_c = contiguous(mask_);
  const T* mask = ptr<T>(mask_c);
  const OptTensor lengths_c = contiguous(lengths_);
  const int64_t* lengths = lengths_c ? lengths_c->data_ptr<int64_t>() : nullptr;
  const OptTensor grad_output_c = contiguous(grad_output_);
  const OptTensor grad_records_c = contiguous(grad_records_);
  const OptTensor c_states_c = contiguous(c_states_);
  const OptTensor ln_hw_c = contiguous(ln_hw_);
  const OptTensor ln_stats_c = contiguous(ln_stats_);
  const T* dout_p = ptr<T>(grad_output_c);
  const T* drec_p = ptr<T>(grad_records_c);
  const T* c_states_p = ptr<T>(c_states_c);
  const T* ln_hw_p = ptr<T>(ln_hw_c);
  const T* stats_p = ptr<T>(ln_stats_c);
  const T* x_p = x.data_ptr<T>();
  const T* h0_p = h0.data_ptr<T>();
  const T* c0_p = c0.data_ptr<T>();
  const T* out_p = output.data_ptr<T>();
  const T* gates_p = gates.data_ptr<T>();
  const T* cells_p = cells.data_ptr<T>();
  const int64_t TBH = T_ * B * H;

  // The running gradients w.r.t. the state after each step; end as dh0, dc0.
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
  T* dh_p = dh.data_ptr<T>();
  T* dc_p = dc.data_ptr<T>();

  // Steps per chunk: enough rows for efficient weight-gradient GEMMs, few enough that the
  // chunk's gradient buffers stay in the low megabytes.
  const int64_t K = std::max<int64_t>(
      1, std::min<int64_t>({T_, std::max<int64_t>(1, 4096 / B),
                            std::max<int64_t>(1, (int64_t(1) << 21) / (B * G))}));
  Tensor dA = empty_like_shape(x, {K, B, G});  // d pre-activations (after layer norm)
  Tensor dHW = q.ln_hh ? empty_like_shape(x, {K, B, G}) : dA;  // d (W_hh h)
  Tensor dHn = proj ? empty_like_shape(x, {K, B, P}) : none_tensor(x);  // d h~ (projected)
  Tensor HH = proj ? empty_like_shape(x, {K, B, H}) : none_tensor(x);   // o * tanh(c)
  Tensor h_in = mask ? empty_like_shape(x, {K * B, P}) : none_tensor(x);
  Tensor xw = q.ln_ih && D >= kNarrow ? empty_like_shape(x, {K * B, G}) : none_tensor(x);
  Tensor dhh_buf = empty_like_shape(x, {B, H});   // d (o * tanh(c))
  Tensor dcs_buf = empty_like_shape(x, {B, H});   // d c~_t through h_t
  Tensor dh_keep = empty_like_shape(x, {B, P});   // the zoneout share of dh
  Tensor dh_in = empty_like_shape(x, {B, P});     // W_hh^T d a
  Tensor ones = at::ones({K * B}, x.options());
  Tensor zeros = at::zeros({std::max({G, P, H})}, x.options());  // stands in for absent inputs
  Tensor hh_scratch = empty_like_shape(x, {B, H});  // o * tanh(c) when there is no projection
  Tensor chat_buf = q.ln_c_w ? empty_like_shape(x, {B, H}) : none_tensor(x);   // LN_c's xhat
  Tensor shown_buf = q.ln_c_w ? empty_like_shape(x, {B, H}) : none_tensor(x);  // LN_c(c)
  const T* zero = zeros.data_ptr<T>();
  T* hh_scratch_p = hh_scratch.data_ptr<T>();
  T* chat_p = q.ln_c_w ? chat_buf.data_ptr<T>() : nullptr;
  T* shown_p = q.ln_c_w ? shown_buf.data_ptr<T>() : nullptr;
  T* dA_p = dA.data_ptr<T>();
  T* dHW_p = dHW.data_ptr<T>();
  T* dHn_p = proj ? dHn.data_ptr<T>() : nullptr;
  T* HH_p = proj ? HH.data_ptr<T>() : nullptr;
  T* dhh_p = dhh_buf.data_ptr<T>();
  T* dcs_p = dcs_buf.data_ptr<T>();
  T* dh_keep_p = dh_keep.data_ptr<T>();
  T* dh_in_p = dh_in.data_ptr<T>();

  ThreadSums<T> peep_sums(3 * H), ln_hh_sums(G), ln_c_sums(2 * H), ln_ih_sums(G);
  // With a few input features, dW_ih, the bias gradient and dx are a few vectorised passes over
  // each row of d a, done while that row is in cache rather than as narrow GEMMs after the loop.
  const bool row_input_grads = D < kNarrow;
  ThreadSums<T> input_sums(row_input_grads ? (D + 1) * G : 0);  // dW_ih^T (D, G), then db (G)
  // W_ih^T (D, G), for the per-row input gradients and the input layer norm's recomputed W_ih x
  const bool need_w_ih_t = row_input_grads || q.ln_ih;
  const Tensor w_ih_t_storage = need_w_ih_t ? tensors.w_ih.t().contiguous() : Tensor();
  const T* w_ih_t = need_w_ih_t ? w_ih_t_storage.data_ptr<T>() : nullptr;
  // d(W_ih x) of each row through the input layer norm (W_ih x recomputed: D row updates)
  Tensor dxw_rows = row_input_grads && q.ln_ih ? empty_like_shape(x, {B, G}) : none_tensor(x);
  const Schedule schedule(B, G * P, G * P + (proj ? H * P : 0) + 40 * H, 40 * H);
  const PackedWeight<T> w_hh(tensors.w_hh, B);  // (G, P)
  const PackedWeight<T> w_hr = proj ? PackedWeight<T>(*tensors.w_hr, B) : PackedWeight<T>();

  for (int64_t s1 = T_; s1 > 0; s1 -= K) {
    const int64_t s0 = std::max<int64_t>(0, s1 - K);
    const int64_t R = (s1 - s0) * B;  // rows in this chunk
    with_cell(forget_gate, q.w_ci != nullptr, [&](auto FG_, auto PEEP_) {
      constexpr bool FG = decltype(FG_)::value;
      constexpr bool PEEP = decltype(PEEP_)::value;
      schedule.run(B, [&](int64_t b0, int64_t b1, auto rows) {
        for (int64_t t = s1 - 1; t >= s0; --t) {
          const int64_t k = t - s0;
          // 1. dh through zoneout into h~_t (and through the projection, below)
          rows(b0, b1, [&](int64_t r0, int64_t r1) {
            for (int64_t b = r0; b < r1; ++b) {
              T* dhn = proj ? dHn_p + (k * B + b) * P : dhh_p + b * H;
              if (!valid(lengths, t, b)) {
                std::fill(dhn, dhn + P, T(0));
                continue;
              }
              zoneout_backward_row(P, dh_p + b * P, dout_p ? dout_p + (t * B + b) * P : zero,
                                   zh ? zh.row(t, b, P) : zero, dh_keep_p + b * P, dhn);
            }
          });
          if (proj) {
            schedule.gemm(b0, b1, w_hr, dHn_p + k * B * P, P, false, dhh_p, H);
          }
          // 2. through o * tanh(LN(c)), the cell and the gates
          rows(b0, b1, [&](int64_t r0, int64_t r1) {
            for (int64_t b = r0; b < r1; ++b) {
              T* da = dA_p + (k * B + b) * G;
              T* dhw = dHW_p + (k * B + b) * G;
              T* hh = proj ? HH_p + (k * B + b) * H : hh_scratch_p + b * H;
              if (!valid(lengths, t, b)) {
                std::fill(da, da + G, T(0));
                if (q.ln_hh) std::fill(dhw, dhw + G, T(0));
                std::fill(hh, hh + H, T(0));
                if (row_input_grads && need_dx) {
                  std::fill_n(dx.data_ptr<T>() + (t * B + b) * D, D, T(0));
                }
                continue;
              }
              const int64_t row = t * B + b;
              T* peep_acc = peep_sums.mine();
              T* ln_hh_acc = ln_hh_sums.mine();
              T* ln_c_acc = ln_c_sums.mine();
              const T* a = gates_p + row * G;
              const T* c_new = cells_p + row * H;
              const T* c_prev = t == 0 ? c0_p + b * H
                                : c_states_p ? c_states_p + (row - B) * H
                                             : cells_p + (row - B) * H;
              auto rec = [&](int k) { return drec_p ? drec_p + k * TBH + row * H : zero; };
              T* dcs = dcs_p + b * H;
              if (q.ln_c_w) {
                const T* st = stats_p + row * kStats;
                T* chat = chat_p + b * H;
                T* shown = shown_p + b * H;
                for (int64_t j = 0; j < H; ++j) {
                  chat[j] = (c_new[j] - st[kMeanC]) * st[kRstdC];
                  shown[j] = chat[j] * q.ln_c_w[j] + (q.ln_c_b ? q.ln_c_b[j] : T(0));
                }
                output_backward_row(H, shown, a + s.go(), dhh_p + b * H, rec(4), hh, da + s.go(),
                                    dcs);
                T* dbias = ln_c_acc + H;
                for (int64_t j = 0; j < H; ++j) dbias[j] += dcs[j];
                row_layer_norm_backward(dcs, chat, q.ln_c_w, st[kRstdC], H, dcs, ln_c_acc);
              } else {
                output_backward_row(H, c_new, a + s.go(), dhh_p + b * H, rec(4), hh, da + s.go(),
                                    dcs);
              }
              const T* z = zc ? zc.row(t, b, H) : zero;
              gate_backward_row<T, FG, PEEP>(s, q, a, c_prev, c_new, dcs, z,
                                             rec(0), rec(1), rec(2), rec(3), dc_p + b * H, da,
                                             peep_acc);
              if (row_input_grads) {
                T* acc = input_sums.mine();
                const T* x_row = x_p + row * D;
                const T* dxw = da;
                if (q.ln_ih) {
                  T* xhat = dxw_rows.data_ptr<T>() + b * G;
                  std::fill(xhat, xhat + G, T(0));
                  for (int64_t i = 0; i < D; ++i) axpy(G, x_row[i], w_ih_t + i * G, xhat);
                  const T* st = stats_p + row * kStats;
                  for (int64_t j = 0; j < G; ++j) xhat[j] = (xhat[j] - st[kMeanIH]) * st[kRstdIH];
                  // xhat's row becomes d(W_ih x)
                  row_layer_norm_backward(da, xhat, q.ln_ih, st[kRstdIH], G, xhat,
                                          ln_ih_sums.mine());
                  dxw = xhat;
                }
                for (int64_t i = 0; i < D; ++i) axpy(G, x_row[i], dxw, acc + i * G);
                if (has_bias) axpy(G, T(1), da, acc + D * G);
                if (need_dx) {
                  T* dx_row = dx.data_ptr<T>() + row * D;
                  for (int64_t i = 0; i < D; ++i) dx_row[i] = dot(dxw, w_ih_t + i * G, G);
                }
              }
              if (q.ln_hh) {
                const T rstd = stats_p[row * kStats + kRstdHH];
                row_layer_norm_backward(da, ln_hw_p + row * G, q.ln_hh, rstd, G, dhw, ln_hh_acc);
              }
            }
          });
          // 3. dh_{t-1} = W_hh^T d(W_hh h) (masked) + the zoneout share
          schedule.gemm(b0, b1, w_hh, dHW_p + k * B * G, G, false, dh_in_p, P);
          rows(b0, b1, [&](int64_t r0, int64_t r1) {
            for (int64_t b = r0; b < r1; ++b) {
              if (!valid(lengths, t, b)) continue;
              T* __restrict dh_b = dh_p + b * P;
              const T* __restrict din = dh_in_p + b * P;
              const T* __restrict keep = dh_keep_p + b * P;
              if (mask) {
                const T* __restrict m = mask + b * P;
                for (int64_t j = 0; j < P; ++j) dh_b[j] = din[j] * m[j] + keep[j];
              } else {
                for (int64_t j = 0; j < P; ++j) dh_b[j] = din[j] + keep[j];
              }
            }
          });
        }
      });
    });

    // Weight gradients of the chunk: GEMMs over all its rows.
    // dW_hh += d(W_hh h)^T h_{t-1}, where h_{t-1} is h0 at t = 0 and the output before.
    const T* h_prev = nullptr;
    const T* dhw_rows = dHW_p;
    int64_t rows = R;
    if (mask) {
      T* hp = h_in.data_ptr<T>();
      for (int64_t t = s0; t < s1; ++t) {
        const T* src = t == 0 ? h0_p : out_p + (t - 1) * B * P;
        T* dst = hp + (t - s0) * B * P;
        for (int64_t k = 0; k < B * P; ++k) dst[k] = src[k] * mask[k % (B * P)];
      }
      h_prev = hp;
    } else if (s0 == 0) {
      gemm<T>(true, false, G, P, B, T(1), dHW_p, G, h0_p, P, T(1), dw_hh.data_ptr<T>(), P);
      h_prev = out_p;
      dhw_rows = dHW_p + B * G;
      rows = R - B;
    } else {
      h_prev = out_p + (s0 - 1) * B * P;
    }
    gemm<T>(true, false, G, P, rows, T(1), dhw_rows, G, h_prev, P, T(1), dw_hh.data_ptr<T>(), P);
    if (has_bias && !row_input_grads) {
      gemm<T>(true, false, G, 1, R, T(1), dA_p, G, ones.data_ptr<T>(), 1, T(1), db.data_ptr<T>(),
              1);
    }
    if (proj) {
      gemm<T>(true, false, P, H, R, T(1), dHn_p, P, HH_p, H, T(1), dw_hr.data_ptr<T>(), H);
    }
    // d(W_ih x): through the input layer norm (its input recomputed: one cheap GEMM)
    const T* dxw = dA_p;
    const T* x_rows = x_p + s0 * B * D;
    if (q.ln_ih && !row_input_grads) {
      T* xw_p = xw.data_ptr<T>();
      gemm<T>(false, false, R, G, D, T(1), x_rows, D, w_ih_t, G, T(0), xw_p, G);
      at::parallel_for(0, R, 64, [&](int64_t r0, int64_t r1) {
        T* acc = ln_ih_sums.mine();
        for (int64_t r = r0; r < r1; ++r) {
          const T* st = stats_p + (s0 * B + r) * kStats;
          T* xhat = xw_p + r * G;
          for (int64_t j = 0; j < G; ++j) xhat[j] = (xhat[j] - st[kMeanIH]) * st[kRstdIH];
          // xhat's row becomes d(W_ih x): read xhat before writing it, so use dA as dy
          row_layer_norm_backward(dA_p + r * G, xhat, q.ln_ih, st[kRstdIH], G, xhat, acc);
        }
      });
      dxw = xw_p;
    }
    if (!row_input_grads) {
      gemm<T>(true, false, G, D, R, T(1), dxw, G, x_rows, D, T(1), dw_ih.data_ptr<T>(), D);
      if (need_dx) {
        gemm<T>(false, false, R, D, G, T(1), dxw, G, q.w_ih, D, T(0),
                dx.data_ptr<T>() + s0 * B * D, D);
      }
    }
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

// ============================================================================================
// RNN: h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
// ============================================================================================

template <typename T, bool RELU>
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
        rows(b0, b1, [&](int64_t r0, int64_t r1) {
          for (int64_t b = r0; b < r1; ++b) {
            T* a = a_t + b * H;
            if (!valid(lengths, t, b)) {
              std::fill(a, a + H, T(0));
              continue;
            }
            rnn_activate_row<T, RELU>(a, bias_p, H);
            std::copy(a, a + H, h_p + b * H);
          }
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
  const int64_t K = std::max<int64_t>(
      1, std::min<int64_t>({T_, std::max<int64_t>(1, 4096 / B),
                            std::max<int64_t>(1, (int64_t(1) << 21) / (B * H))}));
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
        rows(b0, b1, [&](int64_t r0, int64_t r1) {
          for (int64_t b = r0; b < r1; ++b) {
            T* da = da_t + b * H;
            if (!valid(lengths, t, b)) {
              std::fill(da, da + H, T(0));
              continue;
            }
            const T* h = out_p + (t * B + b) * H;
            const T* dh_b = dh_p + b * H;
            const T* dout = dout_p ? dout_p + (t * B + b) * H : nullptr;
            rnn_activation_backward_row(H, relu, h, dh_b, dout ? dout : zero, da);
          }
        });
        schedule.gemm(b0, b1, w_hh_packed, da_t, H, false, dh_in_p, H);
        rows(b0, b1, [&](int64_t r0, int64_t r1) {
          for (int64_t b = r0; b < r1; ++b) {
            if (!valid(lengths, t, b)) continue;
            std::copy(dh_in_p + b * H, dh_in_p + (b + 1) * H, dh_p + b * H);
          }
        });
      }
    });
    const T* dA_rows = dA_p;
    const T* h_prev = s0 > 0 ? out_p + (s0 - 1) * B * H : out_p;
    int64_t rows = R;
    if (s0 == 0) {
      gemm<T>(true, false, H, H, B, T(1), dA_p, H, h0.data_ptr<T>(), H, T(1),
              dw_hh.data_ptr<T>(), H);
      dA_rows = dA_p + B * H;
      h_prev = out_p;
      rows = R - B;
    }
    gemm<T>(true, false, H, H, rows, T(1), dA_rows, H, h_prev, H, T(1), dw_hh.data_ptr<T>(), H);
    gemm<T>(true, false, H, D, R, T(1), dA_p, H, x_p + s0 * B * D, D, T(1), dw_ih.data_ptr<T>(),
            D);
    if (has_bias) {
      gemm<T>(true, false, H, 1, R, T(1), dA_p, H, ones.data_ptr<T>(), 1, T(1), db.data_ptr<T>(),
              1);
    }
    if (need_dx) {
      gemm<T>(false, false, R, D, H, T(1), dA_p, H, w_ih.data_ptr<T>(), D, T(0),
              dx.data_ptr<T>() + s0 * B * D, D);
    }
  }
  return {dx, dh, dw_ih, dw_hh, db};
}

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

std::vector<Tensor> lstm_forward(const LSTMForwardArgs& a) {
  check_inputs(a.x, {&a.h0, &a.c0, &a.w_ih, &a.w_hh});
  LSTMTensors p = lstm_tensors(a);
  return AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "cellstate_lstm_forward", [&] {
    return lstm_forward_impl<scalar_t>(a.x, a.h0, a.c0, p, a.zoneout_h, a.zoneout_c,
                                       a.recurrent_mask, a.lengths, a.forget_gate,
                                       a.return_states, a.save);
  });
}

std::vector<Tensor> lstm_backward(const LSTMBackwardArgs& a) {
  check_inputs(a.x, {&a.h0, &a.c0, &a.w_ih, &a.w_hh, &a.output, &a.gates, &a.cells});
  LSTMTensors p = lstm_tensors(a);
  p.b_ih = p.b_hh = std::nullopt;  // backward reads only whether there is a bias
  std::vector<Tensor> grads =
      AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "cellstate_lstm_backward", [&] {
        return lstm_backward_impl<scalar_t>(
            a.d_output, a.d_h_n, a.d_c_n, a.d_records, a.x, a.h0, a.c0, a.output, a.gates,
            a.cells, saved_result(a.c_states), saved_result(a.ln_hw), saved_result(a.ln_stats), p,
            a.b_ih || a.b_hh, a.zoneout_h, a.zoneout_c, a.recurrent_mask, a.lengths,
            a.forget_gate, a.need_dx);
      });
  // grads: x, h0, c0, w_ih, w_hh, the bias, w_hr, ...; one result per bias instead
  const auto [db_ih, db_hh] = bias_grads(grads[5], a.b_ih.has_value(), a.b_hh.has_value(), a.x);
  grads[5] = db_ih;
  grads.insert(grads.begin() + 6, db_hh);
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
