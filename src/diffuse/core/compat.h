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

namespace diffuse {

// A c10d process group: torch's own distributed engine (Gloo on CPU tensors, NCCL on CUDA ones),
// joined through a TCPStore that rank 0 hosts. LibTorch 1.13 implements the collectives on
// c10d::ProcessGroup and 2.x on c10d::Backend; that difference stays behind this class.
class C10dGroup {
 public:
  struct Options {
    std::string backend = "gloo";  // gloo | nccl (NCCL only in CUDA builds)
    std::string master_addr = "127.0.0.1";
    int master_port = 29500;
    int rank = 0, world_size = 1;
    std::chrono::milliseconds timeout{60000};  // rendezvous and every collective
  };
  // Blocks until all world_size ranks joined (or throws after the timeout).
  explicit C10dGroup(const Options& options);
  ~C10dGroup();
  C10dGroup(const C10dGroup&) = delete;
  C10dGroup& operator=(const C10dGroup&) = delete;

  // A collective in flight; wait() blocks until it is done and throws if it failed or timed out.
  using Pending = std::function<void()>;
  // In-place sum over the ranks of each tensor (all on the same device, contiguous).
  Pending allreduce_sum(std::vector<torch::Tensor> tensors);
  // In-place copy of root's tensors to every rank.
  Pending broadcast(std::vector<torch::Tensor> tensors, int root);

  const Options& options() const { return opt_; }
  // Whether this build can run `backend` ("gloo" always; "nccl" in CUDA builds with NCCL).
  static bool supports(const std::string& backend);

 private:
  struct Impl;
  Options opt_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace diffuse
