#include "diffuse/data/synthetic.h"

#include "diffuse/core/error.h"

namespace diffuse {

Dataset synthetic_dataset(int64_t n, int64_t channels, int64_t size, uint64_t seed) {
  check(n >= 1 && channels >= 1 && size >= 1, "synthetic data: n, channels and size must be >= 1");
  auto gen = at::detail::createCPUGenerator(seed);
  Dataset d;
  d.images = at::randint(0, 256, {n, channels, size, size}, gen, torch::kUInt8);
  d.name = "synthetic";
  return d;
}

}  // namespace diffuse
