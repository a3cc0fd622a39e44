#include "diffuse/samplers/ddpm.h"

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
      process_(respaced_for(schedule, timesteps), prediction, variance),
      clip_x0_(clip_x0) {}

StepResult DdpmSampler::do_step(const torch::Tensor& model_output, size_t i,
                                const torch::Tensor& x, NoiseSource& noise) {
  const auto j = static_cast<int64_t>(num_steps() - 1 - i);
  const auto t = torch::full({x.size(0)}, j, torch::kLong);
  // mu = coef1 x0 + coef2 x_t (Ho et al. eq. 7) with x0 from the prediction.
  auto p = process_.p_mean_variance(model_output, x, t, clip_x0_);
  if (j == 0) return {p.mean, p.pred_x0};
  return {p.mean + torch::exp(0.5 * p.log_variance) * noise.randn_like(x), p.pred_x0};
}

}  // namespace diffuse
