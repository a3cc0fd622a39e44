// Every difference between LibTorch 1.13 (Debian) and 2.x (PyPI) lives here.
#pragma once
#include <torch/torch.h>
#include <torch/version.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#define DIFFUSE_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||          \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

// at::scaled_dot_product_attention (flash / memory-efficient kernels) arrived in 2.0.
#define DIFFUSE_HAS_SDPA DIFFUSE_TORCH_AT_LEAST(2, 0)
// at::_fused_adamw_ arrived in 2.1.
#define DIFFUSE_HAS_FUSED_ADAMW DIFFUSE_TORCH_AT_LEAST(2, 1)
// The device-type-keyed autocast API (set_autocast_enabled(at::kCUDA, ...)) arrived in 2.4.
#define DIFFUSE_HAS_DEVICE_AUTOCAST DIFFUSE_TORCH_AT_LEAST(2, 4)

namespace diffuse {

// RAII bf16/fp16 autocast on CUDA; a no-op on CPU tensors' device or when disabled.
class AutocastGuard {
 public:
  AutocastGuard(bool enabled, at::ScalarType dtype = at::kBFloat16);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool active_ = false;
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kHalf;
};

// Scaled dot-product attention over (B, heads, L, d) tensors.
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);

// Version string, e.g. "2.11.0".
std::string torch_version();

}  // namespace diffuse
