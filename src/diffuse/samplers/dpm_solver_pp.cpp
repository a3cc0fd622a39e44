#include "diffuse/samplers/dpm_solver_pp.h"

#include <cmath>

#include "diffuse/core/error.h"

namespace diffuse {

DpmSolverPPSampler::DpmSolverPPSampler(const Schedule& schedule, std::vector<int64_t> timesteps,
                                       PredictionType prediction, VarianceType variance,
                                       bool clip_x0)
    : Sampler("dpm++2m", schedule, std::move(timesteps), prediction, variance, clip_x0) {}

StepResult DpmSolverPPSampler::do_step(const torch::Tensor& model_output, size_t i,
                                       const torch::Tensor& x, NoiseSource&) {
  const auto step = static_cast<int64_t>(i);
  if (step == 0) last_step_ = -1;
  check(step == 0 || last_step_ == step - 1, "dpm++2m: steps must be taken in order from 0; got ",
        step, " after ", last_step_);
  const double abar = alpha_bar(i), abar_next = alpha_bar_prev(i);
  const double alpha_s = std::sqrt(abar), sigma_s = std::sqrt(1.0 - abar);
  const double alpha_t = std::sqrt(abar_next), sigma_t = std::sqrt(1.0 - abar_next);
  const double lambda_s = std::log(alpha_s / sigma_s);
  auto m0 = predict(model_output, x, abar).x0;

  torch::Tensor prev;
  const bool last = i + 1 == num_steps();
  if (last) {
    // sigma_t = 0: h = inf and the first-order update (eq. 5 of DPM-Solver++) reduces to x0.
    prev = m0;
  } else {
    const double h = std::log(alpha_t / sigma_t) - lambda_s;
    const double phi = -std::expm1(-h);  // 1 - e^{-h}
    // First order: x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^{-h}) x0_s.
    prev = (sigma_t / sigma_s) * x + (alpha_t * phi) * m0;
    if (step > 0) {
      // Second order (Algorithm 2): D = (1 + 1/(2r)) m0 - 1/(2r) m1, r = h_prev / h.
      const double r = (lambda_s - prev_lambda_) / h;
      prev = prev + (alpha_t * phi * 0.5 / r) * (m0 - prev_x0_);
    }
  }
  prev_x0_ = m0;
  prev_lambda_ = lambda_s;
  last_step_ = step;
  return {prev, m0};
}

}  // namespace diffuse
