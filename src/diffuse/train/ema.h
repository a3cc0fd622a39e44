// Exponential moving average of the weights, used for sampling (Ho et al. sec. 4: decay 0.9999).
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

namespace diffuse {

class Ema {
 public:
  // decay: the final decay; warmup: use min(decay, (1 + n) / (10 + n)) after n updates, so early
  // averages are not dominated by the random initialisation.
  Ema(torch::nn::Module& model, std::shared_ptr<torch::nn::Module> shadow, double decay,
      bool warmup);

  // shadow = d shadow + (1 - d) model, for every parameter; buffers are copied. On the device.
  void update(int64_t num_updates);
  // The same with the decay a 0-dim tensor on the parameters' device: on CUDA a step captured in
  // a CUDA graph reads a new decay at every replay; on the CPU it is read on the host.
  void update(const torch::Tensor& decay);
  double decay_at(int64_t num_updates) const;
  torch::nn::Module& shadow() { return *shadow_; }

 private:
  void apply(double decay);
  void copy_buffers();
  std::vector<torch::Tensor> model_params_, shadow_params_, model_buffers_, shadow_buffers_;
  std::shared_ptr<torch::nn::Module> shadow_;
  double decay_;
  bool warmup_;
};

}  // namespace diffuse
