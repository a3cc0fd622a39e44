#include "diffuse/samplers/noise.h"

#include <ATen/CPUGeneratorImpl.h>

#include <mutex>

#include "diffuse/core/error.h"

namespace diffuse {
namespace {

// Generator is a shared handle: the copy taken by value locks and clones the same state.
at::Generator clone_of(at::Generator g) {
  std::lock_guard<std::mutex> lock(g.mutex());
  return g.clone();
}

uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

uint64_t image_seed(uint64_t seed, int64_t i) {
  return splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(i));
}

NoiseSource::NoiseSource(uint64_t seed, int64_t first) : seed_(seed), first_(first) {
  check(first >= 0, "noise: the first image index must be >= 0, got ", first);
}

NoiseSource::NoiseSource(const NoiseSource& other) : seed_(other.seed_), first_(other.first_) {
  for (const auto& g : other.streams_) streams_.push_back(clone_of(g));
}

NoiseSource& NoiseSource::operator=(const NoiseSource& other) {
  if (this != &other) {
    NoiseSource copy(other);
    *this = std::move(copy);
  }
  return *this;
}

at::Generator& NoiseSource::stream(size_t b) {
  while (streams_.size() <= b)
    streams_.push_back(at::detail::createCPUGenerator(
        image_seed(seed_, first_ + static_cast<int64_t>(streams_.size()))));
  return streams_[b];
}

torch::Tensor NoiseSource::randn(at::IntArrayRef shape, const torch::TensorOptions& options) {
  const auto dtype = c10::typeMetaToScalarType(options.dtype());
  check(at::isFloatingType(dtype), "noise: needs a floating-point dtype, got ", dtype);
  check(!shape.empty(), "noise: needs a batch dimension (B, ...)");
  const auto row = shape.slice(1);
  std::vector<torch::Tensor> rows;
  for (int64_t b = 0; b < shape[0]; ++b)
    rows.push_back(torch::randn(row, stream(static_cast<size_t>(b)), torch::kFloat32));
  auto z = rows.empty() ? torch::empty(shape, torch::kFloat32) : torch::stack(rows);
  return z.to(options.device(), dtype);
}

torch::Tensor NoiseSource::randn_like(const torch::Tensor& x) {
  return randn(x.sizes(), x.options());
}

torch::Tensor NoiseSource::state() const {
  std::vector<torch::Tensor> states;
  for (auto g : streams_) {
    std::lock_guard<std::mutex> lock(g.mutex());
    states.push_back(g.get_state());
  }
  if (states.empty()) return torch::empty({0, 0}, torch::kUInt8);
  return torch::stack(states);
}

void NoiseSource::set_state(const torch::Tensor& state) {
  check(state.defined() && state.dim() == 2 && state.scalar_type() == torch::kUInt8,
        "noise: invalid generator state (expected (streams, bytes) uint8)");
  std::vector<at::Generator> streams;
  for (int64_t b = 0; b < state.size(0); ++b) {
    auto g = at::detail::createCPUGenerator(0);
    try {
      g.set_state(state[b].clone());
    } catch (const c10::Error& e) {
      fail("noise: invalid generator state (", e.what_without_backtrace(), ")");
    }
    streams.push_back(std::move(g));
  }
  streams_ = std::move(streams);
}

}  // namespace diffuse
