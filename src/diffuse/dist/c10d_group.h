// torch's own distributed engine (c10d) behind one class: the only file that includes c10d's
// headers, so that only dist/ needs gloo's and NCCL's include paths.
#pragma once
#include <torch/torch.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "diffuse/core/compat.h"

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
