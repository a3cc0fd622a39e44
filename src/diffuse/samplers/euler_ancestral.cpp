#include "diffuse/samplers/euler_ancestral.h"

#include <algorithm>
#include <cmath>

#include "diffuse/samplers/score.h"

namespace diffuse {

AncestralStep ancestral_step(double sigma, double sigma_next) {
  const double up =
      std::min(sigma_next, std::sqrt(sigma_next * sigma_next *
                                     (sigma * sigma - sigma_next * sigma_next) / (sigma * sigma)));
  return {std::sqrt(std::max(0.0, sigma_next * sigma_next - up * up)), up};
}

torch::Tensor sample_euler_ancestral(const Denoiser& denoiser, torch::Tensor x,
                                     const SamplerRun& run) {
  for (size_t i = 0; i < run.timesteps.size(); ++i) {
    const double abar = run.alpha_bar(denoiser, i), abar_next = run.alpha_bar_next(denoiser, i);
    const double sigma = sigma_of_alpha_bar(abar);
    const auto step = ancestral_step(sigma, sigma_of_alpha_bar(abar_next));
    const auto d = denoiser(x, run.timesteps[i]);
    auto next = to_variance_exploding(x, abar) + (step.sigma_down - sigma) * d.eps;
    if (step.sigma_up > 0.0) next = next + step.sigma_up * run.noise->randn_like(x);
    run.step_done(i, x, d.x0);
    x = to_variance_preserving(next, abar_next);
  }
  return x;
}

}  // namespace diffuse
