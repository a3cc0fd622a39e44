#include "diffuse/samplers/ddpm.h"

#include <cmath>

#include "diffuse/samplers/timesteps.h"

namespace diffuse {
namespace {

Schedule respaced_for(const Schedule& schedule, std::vector<int64_t> timesteps) {
  validate_timesteps(timesteps, schedule.num_timesteps());
  std::reverse(timesteps.begin(), timesteps.end());
  return schedule.respaced(timesteps);
}

}  // namespace

DdpmSampler::DdpmSampler(const Schedule& schedule, std::vector<int64_t> timesteps,
                         PredictionType prediction, VarianceType variance, bool clip_x0)
    : Sampler("ddpm", schedule, timesteps, prediction, variance, clip_x0),
      respaced_(respaced_for(schedule, timesteps)) {}

StepResult DdpmSampler::do_step(const torch::Tensor& model_output, size_t i, const torch::Tensor& x,
                                NoiseSource& noise) {
  const auto j = num_steps() - 1 - i;
  const auto& r = respaced_;
  auto p = predict(model_output, x, alpha_bar(i));
  // mu~ = coef1 x0 + coef2 x_t   (Ho et al. eq. 7)
  auto mean = r.posterior_mean_coef1[j] * p.x0 + r.posterior_mean_coef2[j] * x;
  if (j == 0) return {mean, p.x0};
  torch::Tensor z = noise.randn_like(x);
  switch (variance()) {
    case VarianceType::FixedSmall:
      z = std::sqrt(r.posterior_variance[j]) * z;
      break;
    case VarianceType::FixedLarge:
      z = std::sqrt(r.betas[j]) * z;
      break;
    case VarianceType::LearnedRange: {
      // Nichol & Dhariwal eq. 15 with v in [-1, 1] mapped to frac in [0, 1].
      const auto frac = (model_output.narrow(1, x.size(1), x.size(1)) + 1.0) * 0.5;
      const double log_large = std::log(r.betas[j]);
      const double log_small = r.posterior_log_variance_clipped[j];
      z = torch::exp(0.5 * (log_small + frac * (log_large - log_small))) * z;
      break;
    }
  }
  return {mean + z, p.x0};
}

}  // namespace diffuse
