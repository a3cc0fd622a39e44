// The Gaussian noise a sampler consumes (x_T and the ancestral noise), one stream per image as
// EDM's StackedRandomGenerator draws it: row b of every draw comes from image (first + b)'s own
// seeded CPU generator, so image i's noise depends on (seed, i) alone. The batch size, the device
// and the dtype never change an image, and sampling neither reads nor disturbs the global RNG.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace diffuse {

class NoiseSource {
 public:
  // Streams for images first, first + 1, ... of the run seeded `seed`.
  explicit NoiseSource(uint64_t seed = 0, int64_t first = 0);
  // Copies are independent and continue from the same state, so a copy replays the same noise.
  NoiseSource(const NoiseSource& other);
  NoiseSource& operator=(const NoiseSource& other);
  NoiseSource(NoiseSource&&) = default;
  NoiseSource& operator=(NoiseSource&&) = default;

  // N(0, I) noise of `shape` (B, ...): row b from stream b, drawn in float32 on the CPU and moved
  // to the requested device and dtype.
  torch::Tensor randn(at::IntArrayRef shape, const torch::TensorOptions& options);
  torch::Tensor randn_like(const torch::Tensor& x);

  uint64_t seed() const { return seed_; }
  int64_t first() const { return first_; }
  // The streams' generator states, (streams, bytes) uint8, and back.
  torch::Tensor state() const;
  void set_state(const torch::Tensor& state);

 private:
  at::Generator& stream(size_t b);

  uint64_t seed_;
  int64_t first_;
  std::vector<at::Generator> streams_;
};

// The seed of image i's stream: seed and i mixed (splitmix64) so that neighbouring seeds and
// neighbouring images share no noise.
uint64_t image_seed(uint64_t seed, int64_t i);

}  // namespace diffuse
