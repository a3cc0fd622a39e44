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

}  // namespace

NoiseSource::NoiseSource(uint64_t seed, bool on_device)
    : seed_(seed), on_device_(on_device), cpu_(at::detail::createCPUGenerator(seed)) {}

NoiseSource::NoiseSource(const NoiseSource& other)
    : seed_(other.seed_), on_device_(other.on_device_), cpu_(clone_of(other.cpu_)) {
  for (const auto& [key, gen] : other.device_) device_.emplace(key, clone_of(gen));
}

NoiseSource& NoiseSource::operator=(const NoiseSource& other) {
  if (this != &other) {
    NoiseSource copy(other);
    *this = std::move(copy);
  }
  return *this;
}

at::Generator& NoiseSource::generator_for(const torch::Device& device) {
  if (device.is_cpu()) return cpu_;
  const auto key = device.str();
  auto it = device_.find(key);
  if (it == device_.end()) {
    // A clone of the device's default generator is a fresh generator of the right kind (CUDA,
    // MPS, ...) without this file needing that backend's headers.
    auto gen = clone_of(at::globalContext().defaultGenerator(device));
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_current_seed(seed_);
    }
    it = device_.emplace(key, std::move(gen)).first;
  }
  return it->second;
}

torch::Tensor NoiseSource::randn(at::IntArrayRef shape, const torch::TensorOptions& options) {
  const auto dtype = c10::typeMetaToScalarType(options.dtype());
  check(at::isFloatingType(dtype), "noise: needs a floating-point dtype, got ", dtype);
  if (on_device_) {
    const auto device = options.device();
    const bool native = dtype == torch::kFloat32 || dtype == torch::kFloat64;
    auto z =
        torch::randn(shape, generator_for(device), options.dtype(native ? dtype : torch::kFloat32));
    return native ? z : z.to(dtype);
  }
  auto z = torch::randn(shape, cpu_, torch::TensorOptions().dtype(torch::kFloat32));
  return z.to(options.device(), dtype);
}

torch::Tensor NoiseSource::randn_like(const torch::Tensor& x) {
  return randn(x.sizes(), x.options());
}

torch::Tensor NoiseSource::state() const {
  at::Generator g = cpu_;
  std::lock_guard<std::mutex> lock(g.mutex());
  return g.get_state();
}

void NoiseSource::set_state(const torch::Tensor& state) {
  std::lock_guard<std::mutex> lock(cpu_.mutex());
  try {
    cpu_.set_state(state);
  } catch (const c10::Error& e) {
    fail("noise: invalid generator state (", e.what_without_backtrace(), ")");
  }
}

}  // namespace diffuse
