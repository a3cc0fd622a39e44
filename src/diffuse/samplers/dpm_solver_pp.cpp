#include "diffuse/samplers/dpm_solver_pp.h"

#include <cmath>

namespace diffuse {

torch::Tensor sample_dpmpp_2m(const Denoiser& denoiser, torch::Tensor x, const SamplerRun& run) {
  const auto lambda = [](double abar) { return 0.5 * std::log(abar / (1.0 - abar)); };
  torch::Tensor x0_prev;
  double h_prev = 0.0;
  const auto S = run.timesteps.size();
  for (size_t i = 0; i < S; ++i) {
    const double abar = run.alpha_bar(denoiser, i), abar_next = run.alpha_bar_next(denoiser, i);
    const auto d = denoiser(x, run.timesteps[i]);
    torch::Tensor next = d.x0;
    if (i + 1 < S) {
      const double alpha_next = std::sqrt(abar_next);
      const double sigma = std::sqrt(1.0 - abar), sigma_next = std::sqrt(1.0 - abar_next);
      const double h = lambda(abar_next) - lambda(abar);
      const double phi = -std::expm1(-h);  // 1 - e^{-h}
      next = (sigma_next / sigma) * x + (alpha_next * phi) * d.x0;
      if (x0_prev.defined()) {
        const double r = h_prev / h;
        next = next + (alpha_next * phi * 0.5 / r) * (d.x0 - x0_prev);
      }
      h_prev = h;
    }
    run.step_done(i, x, d.x0);
    x0_prev = d.x0;
    x = std::move(next);
  }
  return x;
}

}  // namespace diffuse
