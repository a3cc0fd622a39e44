#include "diffuse/samplers/euler.h"

#include "diffuse/samplers/score.h"

namespace diffuse {

EulerSampler::EulerSampler(const Schedule& schedule, std::vector<int64_t> timesteps,
                           PredictionType prediction, VarianceType variance, bool clip_x0)
    : Sampler("euler", schedule, std::move(timesteps), prediction, variance, clip_x0) {}

StepResult EulerSampler::do_step(const torch::Tensor& model_output, size_t i,
                                 const torch::Tensor& x, NoiseSource&) {
  const double abar = alpha_bar(i), abar_next = alpha_bar_prev(i);
  const double sigma = sigma_of_alpha_bar(abar), sigma_next = sigma_of_alpha_bar(abar_next);
  // d = (x_sigma - D) / sigma is the eps the output implies (consistent with a clipped D).
  auto p = predict(model_output, x, abar);
  auto next = to_variance_exploding(x, abar) + (sigma_next - sigma) * p.eps;
  return {to_variance_preserving(next, abar_next), p.x0};
}

}  // namespace diffuse
