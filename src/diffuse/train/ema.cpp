#include "diffuse/train/ema.h"

#include "diffuse/core/error.h"

namespace diffuse {

Ema::Ema(torch::nn::Module& model, std::shared_ptr<torch::nn::Module> shadow, double decay,
         bool warmup)
    : shadow_(std::move(shadow)), decay_(decay), warmup_(warmup) {
  check(decay >= 0 && decay <= 1, "--ema-decay must be in [0, 1], got ", decay);
  model_params_ = model.parameters();
  shadow_params_ = shadow_->parameters();
  model_buffers_ = model.buffers();
  shadow_buffers_ = shadow_->buffers();
  check(model_params_.size() == shadow_params_.size(), "EMA: model and shadow differ in structure");
  for (auto& p : shadow_params_) p.set_requires_grad(false);
}

double Ema::decay_at(int64_t n) const {
  if (!warmup_) return decay_;
  return std::min(decay_, (1.0 + n) / (10.0 + n));
}

void Ema::update(int64_t num_updates) {
  apply(decay_at(num_updates));
}

void Ema::update(const torch::Tensor& decay) {
  if (!decay.is_cuda()) return apply(decay.item<double>());
  torch::NoGradGuard no_grad;
  // d shadow + (1 - d) model = shadow + (1 - d) (model - shadow).
  auto keep = 1 - decay;
  for (size_t i = 0; i < shadow_params_.size(); ++i)
    shadow_params_[i].lerp_(model_params_[i].detach(), keep);
  copy_buffers();
}

void Ema::apply(double d) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < shadow_params_.size(); ++i)
    shadow_params_[i].mul_(d).add_(model_params_[i].detach(), 1.0 - d);
  copy_buffers();
}

void Ema::copy_buffers() {
  for (size_t i = 0; i < shadow_buffers_.size(); ++i) shadow_buffers_[i].copy_(model_buffers_[i]);
}

}  // namespace diffuse
