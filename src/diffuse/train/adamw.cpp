#include "diffuse/train/adamw.h"

#include <cmath>

#include "diffuse/core/compat.h"
#include "diffuse/core/error.h"

namespace diffuse {

AdamW::AdamW(std::vector<std::pair<std::string, torch::Tensor>> named_params, AdamWOptions options)
    : opt_(options) {
  torch::NoGradGuard no_grad;
  for (auto& [name, p] : named_params) {
    names_.push_back(name);
    params_.push_back(p);
    exp_avg_.push_back(torch::zeros_like(p, torch::MemoryFormat::Preserve));
    exp_avg_sq_.push_back(torch::zeros_like(p, torch::MemoryFormat::Preserve));
  }
}

void AdamW::zero_grad() {
  for (auto& p : params_) p.mutable_grad() = torch::Tensor();
}

torch::Tensor AdamW::clip_grad_norm(double max_norm) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> grads;
  for (auto& p : params_)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty())
    return torch::zeros({}, params_.empty() ? torch::TensorOptions() : params_[0].options());
  std::vector<torch::Tensor> sq;
  sq.reserve(grads.size());
  for (auto& g : grads) sq.push_back(g.to(torch::kFloat32).pow(2).sum());
  auto total = torch::stack(sq).sum().sqrt();
  if (max_norm > 0) {
    // min(1, max_norm / norm) as a device scalar: branching on it would need a host sync.
    auto coef = (max_norm / (total + 1e-6)).clamp_max(1.0);
    for (auto& g : grads) g.mul_(coef.to(g.scalar_type()));
  }
  return total;
}

bool AdamW::on_device() const {
#if DIFFUSE_TORCH_AT_LEAST(2, 4) && defined(DIFFUSE_WITH_CUDA)
  return !params_.empty() && params_[0].is_cuda();
#else
  return false;
#endif
}

void AdamW::step(double lr) {
  if (on_device())
    step(torch::full({}, lr, params_[0].options().dtype(torch::kFloat32)));
  else
    host_step(lr);
}

void AdamW::step(const torch::Tensor& lr) {
  if (on_device())
    device_step(lr);
  else
    host_step(lr.item<double>());
}

void AdamW::host_step(double lr) {
  torch::NoGradGuard no_grad;
  ++step_;
  const double b1 = opt_.beta1, b2 = opt_.beta2;
  const double bc1 = 1.0 - std::pow(b1, static_cast<double>(step_));
  const double bc2 = 1.0 - std::pow(b2, static_cast<double>(step_));
  const double step_size = lr / bc1;
  for (size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i];
    const auto& g = p.grad();
    if (!g.defined()) continue;
    if (opt_.weight_decay != 0) p.mul_(1.0 - lr * opt_.weight_decay);
    exp_avg_[i].mul_(b1).add_(g, 1.0 - b1);
    exp_avg_sq_[i].mul_(b2).addcmul_(g, g, 1.0 - b2);
    auto denom = (exp_avg_sq_[i].sqrt() / std::sqrt(bc2)).add_(opt_.eps);
    p.addcdiv_(exp_avg_[i], denom, -step_size);
  }
}

void AdamW::device_step(const torch::Tensor& lr) {
#if DIFFUSE_TORCH_AT_LEAST(2, 4) && defined(DIFFUSE_WITH_CUDA)
  torch::NoGradGuard no_grad;
  check(lr.is_cuda() && lr.dim() == 0,
        "AdamW: the learning rate must be a 0-dim tensor on the parameters' CUDA device");
  if (device_steps_.empty())
    for (auto& p : params_)
      device_steps_.push_back(
          torch::full({}, static_cast<double>(step_), p.options().dtype(torch::kFloat32)));
  std::vector<torch::Tensor> p, g, m, v, steps;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!params_[i].grad().defined()) continue;
    p.push_back(params_[i]);
    g.push_back(params_[i].grad());
    m.push_back(exp_avg_[i]);
    v.push_back(exp_avg_sq_[i]);
    steps.push_back(device_steps_[i]);
  }
  at::_foreach_add_(steps, at::Scalar(1));
  at::_fused_adamw_(p, g, m, v, {}, steps, lr, opt_.beta1, opt_.beta2, opt_.weight_decay, opt_.eps,
                    false, false, c10::nullopt, c10::nullopt);
#else
  fail("AdamW: the device step needs a CUDA build of LibTorch 2.4 or newer");
#endif
}

int64_t AdamW::steps_taken() const {
  // The device counts are a sync to read: only checkpoints and tests ask.
  return device_steps_.empty() ? step_ : device_steps_[0].item<int64_t>();
}

std::map<std::string, torch::Tensor> AdamW::state_dict() const {
  std::map<std::string, torch::Tensor> s;
  for (size_t i = 0; i < names_.size(); ++i) {
    s["exp_avg." + names_[i]] = exp_avg_[i];
    s["exp_avg_sq." + names_[i]] = exp_avg_sq_[i];
  }
  s["step"] = torch::tensor(steps_taken(), torch::kLong);
  return s;
}

void AdamW::load_state_dict(const std::map<std::string, torch::Tensor>& state,
                            const std::string& source) {
  torch::NoGradGuard no_grad;
  std::vector<std::string> problems;
  auto fetch = [&](const std::string& key, torch::Tensor& dst) {
    auto it = state.find(key);
    if (it == state.end()) {
      problems.push_back("missing " + key);
    } else if (it->second.sizes() != dst.sizes()) {
      problems.push_back("wrong shape for " + key);
    } else {
      dst.copy_(it->second);
    }
  };
  for (size_t i = 0; i < names_.size(); ++i) {
    fetch("exp_avg." + names_[i], exp_avg_[i]);
    fetch("exp_avg_sq." + names_[i], exp_avg_sq_[i]);
  }
  auto it = state.find("step");
  if (it == state.end())
    problems.push_back("missing step");
  else
    step_ = it->second.item<int64_t>();
  device_steps_.clear();  // made again from step_ at the next device step
  if (!problems.empty()) {
    std::string msg;
    for (size_t i = 0; i < problems.size() && i < 10; ++i) msg += (i ? ", " : "") + problems[i];
    fail(source, ": optimizer state does not match the model: ", msg,
         problems.size() > 10 ? " ..." : "");
  }
}

}  // namespace diffuse
