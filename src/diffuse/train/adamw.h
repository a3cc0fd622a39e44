// AdamW (Loshchilov & Hutter) over a fixed list of named parameters, with its state as named
// tensors so checkpoints can hold it, gradient clipping that stays on the device, and LibTorch's
// fused CUDA kernel where available.
#pragma once
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

namespace diffuse {

struct AdamWOptions {
  double lr = 2e-4;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;
};

class AdamW {
 public:
  AdamW(std::vector<std::pair<std::string, torch::Tensor>> named_params, AdamWOptions options);

  // One update with learning rate lr; parameters without a gradient are skipped.
  void step(double lr);
  // The same with lr a 0-dim float32 tensor on the parameters' device. On CUDA (LibTorch >= 2.4,
  // LibTorch's fused kernel) the step counts live on the device as well, so a CUDA graph can
  // replay the update with a new learning rate each time; elsewhere lr is read on the host.
  void step(const torch::Tensor& lr);
  void zero_grad();
  int64_t steps_taken() const;

  // Scales gradients so their global L2 norm is at most max_norm (max_norm <= 0: no clipping) and
  // returns the norm before clipping as a 0-dim device tensor: no host synchronisation.
  torch::Tensor clip_grad_norm(double max_norm);

  // "exp_avg.<name>", "exp_avg_sq.<name>" and "step" (int64 scalar).
  std::map<std::string, torch::Tensor> state_dict() const;
  // Missing or mis-shaped entries throw diffuse::Error naming `source`.
  void load_state_dict(const std::map<std::string, torch::Tensor>& state,
                       const std::string& source);

 private:
  std::vector<std::string> names_;
  std::vector<torch::Tensor> params_, exp_avg_, exp_avg_sq_;
  bool on_device() const;
  void host_step(double lr);
  void device_step(const torch::Tensor& lr);
  std::vector<torch::Tensor> device_steps_;  // the device step's counts, one per parameter
  AdamWOptions opt_;
  int64_t step_ = 0;
};

}  // namespace diffuse
