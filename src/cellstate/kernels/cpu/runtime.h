// What the CPU kernels run on (part of lstm.cpp's translation unit): tensor helpers, the pool
// that keeps forward's saved tensors between training steps (SavedMemory), per-thread sums, and
// how a recurrence is spread over threads (Schedule).

#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "gemm.h"

using at::Tensor;
using OptTensor = std::optional<Tensor>;

namespace {

// ---- tensor helpers -----------------------------------------------------------------------

template <typename T>
const T* ptr(const OptTensor& t) {
  return t.has_value() && t->defined() ? t->data_ptr<T>() : nullptr;
}

bool present(const OptTensor& t) { return t.has_value() && t->defined(); }

// A bfloat16 tensor's elements as their bit patterns.
uint16_t* bf16_bits(const Tensor& t) {
  return reinterpret_cast<uint16_t*>(t.data_ptr<at::BFloat16>());
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
  bool bf16;           // bfloat16 products: each thread releases its AMX tiles after them

  // weights: elements of the recurrent weight matrix; row_work, step_row_work: rough cost of one
  // row of one step, with and without its GEMM.
  Schedule(int64_t B, int64_t weights, int64_t row_work, int64_t step_row_work,
           bool bf16_products = false)
      : per_step(weights > kL2Weights && at::get_num_threads() > 1 && !at::in_parallel_region()),
        grain(B * row_work >= 32768 ? 1 : B),
        step_grain(B * step_row_work >= 32768 ? 1 : B),
        bf16(bf16_products) {}

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
        if (bf16) release_bf16_tiles();
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
        if (bf16) release_bf16_tiles();
      });
    } else {
      gemm(b0, b1, w1, a1, lda1, false, c, ldc);
      gemm(b0, b1, w2, a2, lda2, true, c, ldc);
    }
  }

  // C = [A1 A2] W (rows b0..b1) on bfloat16 panels of two weights stacked, W1 (k1 rows) over
  // W2 (PackedWeight::multiply_stacked): one product per panel where gemm_sum runs two.
  // A1: float, or bfloat16 bits.
  template <typename A1>
  void gemm_stacked(int64_t b0, int64_t b1, const PackedWeight<float>& w, const A1* a1,
                    int64_t lda1, int64_t k1, const float* a2, int64_t lda2, float* c,
                    int64_t ldc) const {
    const int64_t m = b1 - b0;
    const A1* a1_rows = a1 + b0 * lda1;
    const float* a2_rows = a2 + b0 * lda2;
    float* c_rows = c + b0 * ldc;
    auto panels = [&](int64_t p0, int64_t p1) {
      w.multiply_stacked(m, p0, p1, a1_rows, lda1, k1, a2_rows, lda2, c_rows, ldc);
    };
    if (per_step && w.panels() > 1) {
      at::parallel_for(0, w.panels(), 1, [&](int64_t p0, int64_t p1) {
        panels(p0, p1);
        release_bf16_tiles();
      });
    } else {
      panels(0, w.panels());
    }
  }

  // body(b0, b1, rows) runs the steps for rows [b0, b1); rows(r0, r1, f) runs f(b) for each row
  // b in [r0, r1) (per step: split across threads). Each thread releases its tiles at the end;
  // per step, the threads of gemm() and gemm_sum() release theirs after each product.
  template <typename Body>
  void run(int64_t B, Body&& body) const {
    auto each = [](int64_t r0, int64_t r1, auto& f) {
      for (int64_t b = r0; b < r1; ++b) f(b);
    };
    if (per_step) {
      const int64_t g = step_grain;
      body(int64_t(0), B, [g, each](int64_t r0, int64_t r1, auto&& f) {
        at::parallel_for(r0, r1, g, [&](int64_t c0, int64_t c1) { each(c0, c1, f); });
      });
      if (bf16) release_bf16_tiles();  // after its products of a single panel
    } else {
      at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
        body(b0, b1, [each](int64_t r0, int64_t r1, auto&& f) { each(r0, r1, f); });
        if (bf16) release_bf16_tiles();
      });
    }
  }
};

bool valid(const int64_t* lengths, int64_t t, int64_t b) {
  return lengths == nullptr || t < lengths[b];
}

}  // namespace
