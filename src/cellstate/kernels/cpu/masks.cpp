// Bernoulli masks from a counter-based hash: the C++ twin of kernels/masks.py (the spec, which
// gives the same bits with torch integer ops). Element k of the mask with seed s is 1 where
// mix(mix(lo(k) ^ lo(s)) ^ hi(k) ^ hi(s)) >> 8 < ceil(p * 2^24).

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "entry_points.h"

namespace {

// Wellons' "lowbias32" integer mixer.
inline uint32_t mix(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  return x ^ (x >> 16);
}

}  // namespace

at::Tensor bernoulli_mask(int64_t seed, std::vector<int64_t> shape, double p,
                          at::ScalarType dtype) {
  at::Tensor out = at::empty(shape, at::TensorOptions().dtype(dtype));
  const uint64_t s = uint64_t(seed);
  const uint32_t seed_low = uint32_t(s), seed_high = uint32_t(s >> 32);
  const uint32_t limit = uint32_t(std::ceil(p * 16777216.0));  // integers below p * 2^24
  AT_DISPATCH_FLOATING_TYPES(dtype, "cellstate_bernoulli_mask", [&] {
    scalar_t* data = out.data_ptr<scalar_t>();
    at::parallel_for(0, out.numel(), int64_t(1) << 16, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        const uint64_t index = uint64_t(k);
        const uint32_t h = mix(mix(uint32_t(index) ^ seed_low) ^ uint32_t(index >> 32) ^ seed_high);
        data[k] = (h >> 8) < limit ? scalar_t(1) : scalar_t(0);
      }
    });
  });
  return out;
}
