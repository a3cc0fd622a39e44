// The Gaussian noise a sampler consumes (x_T and the ancestral noise), from a seeded generator of
// its own, so that sampling neither reads nor disturbs the global RNG.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>

namespace diffuse {

class NoiseSource {
 public:
  // on_device = false (default): every draw comes from one seeded CPU generator in float32 and is
  // then moved to the requested device and dtype, so a seed gives the same noise, hence the same
  // images up to float rounding, on CPU and GPU and in any dtype. on_device = true draws directly
  // on the tensor's device (one generator per device, seeded alike): no host-to-device copy, but
  // the numbers then depend on the device.
  explicit NoiseSource(uint64_t seed = 0, bool on_device = false);
  // Copies are independent and continue from the same state, so a copy replays the same noise.
  NoiseSource(const NoiseSource& other);
  NoiseSource& operator=(const NoiseSource& other);
  NoiseSource(NoiseSource&&) = default;
  NoiseSource& operator=(NoiseSource&&) = default;

  // N(0, I) noise with x's shape, dtype and device.
  torch::Tensor randn_like(const torch::Tensor& x);
  torch::Tensor randn(at::IntArrayRef shape, const torch::TensorOptions& options);

  uint64_t seed() const { return seed_; }
  bool on_device() const { return on_device_; }
  // The CPU generator's state (a uint8 tensor), for checkpoints; device generators restart from
  // the seed.
  torch::Tensor state() const;
  void set_state(const torch::Tensor& state);

 private:
  at::Generator& generator_for(const torch::Device& device);

  uint64_t seed_;
  bool on_device_;
  at::Generator cpu_;
  std::map<std::string, at::Generator> device_;
};

}  // namespace diffuse
