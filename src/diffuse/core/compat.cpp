#include "diffuse/core/compat.h"

#include <ATen/autocast_mode.h>

#include <cmath>

namespace diffuse {

AutocastGuard::AutocastGuard(bool enabled, at::ScalarType dtype) {
  if (!enabled) return;
  active_ = true;
#if DIFFUSE_HAS_DEVICE_AUTOCAST
  prev_enabled_ = at::autocast::is_autocast_enabled(at::kCUDA);
  prev_dtype_ = at::autocast::get_autocast_dtype(at::kCUDA);
  at::autocast::set_autocast_enabled(at::kCUDA, true);
  at::autocast::set_autocast_dtype(at::kCUDA, dtype);
#else
  prev_enabled_ = at::autocast::is_enabled();
  prev_dtype_ = at::autocast::get_autocast_gpu_dtype();
  at::autocast::set_enabled(true);
  at::autocast::set_autocast_gpu_dtype(dtype);
#endif
}

AutocastGuard::~AutocastGuard() {
  if (!active_) return;
#if DIFFUSE_HAS_DEVICE_AUTOCAST
  at::autocast::set_autocast_enabled(at::kCUDA, prev_enabled_);
  at::autocast::set_autocast_dtype(at::kCUDA, prev_dtype_);
#else
  at::autocast::set_enabled(prev_enabled_);
  at::autocast::set_autocast_gpu_dtype(prev_dtype_);
#endif
  if (!prev_enabled_) at::autocast::clear_cache();
}

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
#if DIFFUSE_HAS_SDPA
  return at::scaled_dot_product_attention(q, k, v);
#else
  // softmax(q k^T / sqrt(d)) v, the same function sdpa computes.
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  auto w = torch::matmul(q, k.transpose(-1, -2)) * scale;
  return torch::matmul(torch::softmax(w, -1), v);
#endif
}

std::string torch_version() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

}  // namespace diffuse
