#include "diffuse/samplers/ddim.h"

#include <cmath>

#include "diffuse/core/error.h"

namespace diffuse {

DdimSampler::DdimSampler(const Schedule& schedule, std::vector<int64_t> timesteps, double eta,
                         PredictionType prediction, VarianceType variance, bool clip_x0)
    : Sampler("ddim", schedule, std::move(timesteps), prediction, variance, clip_x0), eta_(eta) {
  check(eta >= 0.0 && eta <= 1.0, "--eta must be in [0, 1], got ", eta);
}

double DdimSampler::sigma(size_t i) const {
  const double abar = alpha_bar(i), abar_prev = alpha_bar_prev(i);
  return eta_ * std::sqrt((1.0 - abar_prev) / (1.0 - abar) * (1.0 - abar / abar_prev));
}

StepResult DdimSampler::do_step(const torch::Tensor& model_output, size_t i, const torch::Tensor& x,
                                NoiseSource& noise) {
  const double abar_prev = alpha_bar_prev(i), sig = sigma(i);
  auto p = predict(model_output, x, alpha_bar(i));
  // "Direction pointing to x_t"; rounding can push 1 - abar' - sigma^2 a hair below 0.
  const double dir = std::sqrt(std::max(0.0, 1.0 - abar_prev - sig * sig));
  auto prev = std::sqrt(abar_prev) * p.x0 + dir * p.eps;
  if (sig > 0.0) prev = prev + sig * noise.randn_like(x);
  return {prev, p.x0};
}

}  // namespace diffuse
