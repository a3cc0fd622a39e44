#include "diffuse/samplers/euler_ancestral.h"

#include <algorithm>
#include <cmath>

#include "diffuse/samplers/score.h"

namespace diffuse {

EulerAncestralSampler::EulerAncestralSampler(const Schedule& schedule,
                                             std::vector<int64_t> timesteps,
                                             PredictionType prediction, VarianceType variance,
                                             bool clip_x0)
    : Sampler("euler-a", schedule, std::move(timesteps), prediction, variance, clip_x0) {}

double EulerAncestralSampler::sigma_up(size_t i) const {
  const double s = sigma_of_alpha_bar(alpha_bar(i)), s_next = sigma_of_alpha_bar(alpha_bar_prev(i));
  return std::min(s_next, std::sqrt(s_next * s_next * (s * s - s_next * s_next) / (s * s)));
}

double EulerAncestralSampler::sigma_down(size_t i) const {
  const double s_next = sigma_of_alpha_bar(alpha_bar_prev(i)), up = sigma_up(i);
  return std::sqrt(std::max(0.0, s_next * s_next - up * up));
}

StepResult EulerAncestralSampler::do_step(const torch::Tensor& model_output, size_t i,
                                          const torch::Tensor& x, NoiseSource& noise) {
  const double abar = alpha_bar(i), abar_next = alpha_bar_prev(i);
  const double sigma = sigma_of_alpha_bar(abar), up = sigma_up(i);
  auto p = predict(model_output, x, abar);
  auto next = to_variance_exploding(x, abar) + (sigma_down(i) - sigma) * p.eps;
  if (up > 0.0) next = next + up * noise.randn_like(x);
  return {to_variance_preserving(next, abar_next), p.x0};
}

}  // namespace diffuse
