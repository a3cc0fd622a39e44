#include "diffuse/samplers/euler.h"

#include "diffuse/samplers/score.h"

namespace diffuse {

torch::Tensor sample_euler(const Denoiser& denoiser, torch::Tensor x, const SamplerRun& run) {
  for (size_t i = 0; i < run.timesteps.size(); ++i) {
    const double abar = run.alpha_bar(denoiser, i), abar_next = run.alpha_bar_next(denoiser, i);
    const double sigma = sigma_of_alpha_bar(abar), sigma_next = sigma_of_alpha_bar(abar_next);
    // d = (x_sigma - D) / sigma is the eps the output implies (consistent with a clipped D).
    const auto d = denoiser(x, run.timesteps[i]);
    auto next = to_variance_exploding(x, abar) + (sigma_next - sigma) * d.eps;
    run.step_done(i, x, d.x0);
    x = to_variance_preserving(next, abar_next);
  }
  return x;
}

}  // namespace diffuse
