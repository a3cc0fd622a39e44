#include "diffuse/samplers/heun.h"

#include "diffuse/core/error.h"
#include "diffuse/samplers/score.h"
#include "diffuse/samplers/timesteps.h"

namespace diffuse {
namespace {

// t_0, t_1, t_1, ..., t_{N-1}, t_{N-1}: where the 2N - 1 evaluations happen.
std::vector<int64_t> evaluations(const Schedule& schedule, const std::vector<int64_t>& levels) {
  validate_timesteps(levels, schedule.num_timesteps());
  std::vector<int64_t> ts{levels.front()};
  for (size_t k = 1; k < levels.size(); ++k) ts.insert(ts.end(), {levels[k], levels[k]});
  return ts;
}

}  // namespace

HeunSampler::HeunSampler(const Schedule& schedule, const std::vector<int64_t>& levels,
                         PredictionType prediction, VarianceType variance, bool clip_x0)
    : Sampler("heun", schedule, evaluations(schedule, levels), prediction, variance, clip_x0,
              /*repeated_timesteps=*/true),
      levels_(levels) {}

StepResult HeunSampler::do_step(const torch::Tensor& model_output, size_t i, const torch::Tensor& x,
                                NoiseSource&) {
  const auto step = static_cast<int64_t>(i);
  if (step == 0) last_step_ = -1;
  check(step == 0 || last_step_ == step - 1, "heun: steps must be taken in order from 0; got ",
        step, " after ", last_step_);
  last_step_ = step;
  const double abar = alpha_bar(i), abar_next = alpha_bar_prev(i);
  auto p = predict(model_output, x, abar);
  if (i % 2 == 0) {
    // Euler predictor from level i/2 to the next level (or to sigma = 0 after the last).
    const double dsigma = sigma_of_alpha_bar(abar_next) - sigma_of_alpha_bar(abar);
    x_k_ = to_variance_exploding(x, abar);
    d_k_ = p.eps;
    dsigma_ = dsigma;
    return {to_variance_preserving(x_k_ + dsigma * d_k_, abar_next), p.x0};
  }
  // Corrector at x~ (the level's timestep): the trapezoid of the two slopes, from x_k again.
  auto next = x_k_ + (0.5 * dsigma_) * (d_k_ + p.eps);
  x_k_ = torch::Tensor();
  d_k_ = torch::Tensor();
  return {to_variance_preserving(next, abar_next), p.x0};
}

}  // namespace diffuse
