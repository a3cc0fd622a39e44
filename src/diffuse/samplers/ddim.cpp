#include "diffuse/samplers/ddim.h"

#include <cmath>

#include "diffuse/core/error.h"

namespace diffuse {

double ddim_sigma(double abar, double abar_next, double eta) {
  if (eta == 0.0) return 0.0;
  return eta * std::sqrt((1.0 - abar_next) / (1.0 - abar) * (1.0 - abar / abar_next));
}

torch::Tensor ddim_step(const torch::Tensor& x0, const torch::Tensor& eps, double abar_next,
                        double sigma, NoiseSource* noise) {
  // "Direction pointing to x_t"; rounding can push 1 - abar' - sigma^2 a hair below 0.
  const double dir = std::sqrt(std::max(0.0, 1.0 - abar_next - sigma * sigma));
  auto x = std::sqrt(abar_next) * x0 + dir * eps;
  if (sigma > 0.0) {
    check(noise != nullptr, "ddim: eta > 0 needs a noise source");
    x = x + sigma * noise->randn_like(x0);
  }
  return x;
}

torch::Tensor sample_ddim(const Denoiser& denoiser, torch::Tensor x, const SamplerRun& run) {
  for (size_t i = 0; i < run.timesteps.size(); ++i) {
    const double abar = run.alpha_bar(denoiser, i), abar_next = run.alpha_bar_next(denoiser, i);
    const auto d = denoiser(x, run.timesteps[i]);
    auto next = ddim_step(d.x0, d.eps, abar_next, ddim_sigma(abar, abar_next, run.eta), run.noise);
    run.step_done(i, x, d.x0);
    x = std::move(next);
  }
  return x;
}

}  // namespace diffuse
