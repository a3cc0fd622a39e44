#include "diffuse/samplers/heun.h"

#include "diffuse/samplers/score.h"

namespace diffuse {

torch::Tensor sample_heun(const Denoiser& denoiser, torch::Tensor x, const SamplerRun& run) {
  const auto N = run.timesteps.size();
  for (size_t i = 0; i < N; ++i) {
    const double abar = run.alpha_bar(denoiser, i), abar_next = run.alpha_bar_next(denoiser, i);
    const double t_cur = sigma_of_alpha_bar(abar), t_next = sigma_of_alpha_bar(abar_next);
    const auto x_cur = to_variance_exploding(x, abar);
    const auto d = denoiser(x, run.timesteps[i]);
    const auto& d_cur = d.eps;
    auto x_next = x_cur + (t_next - t_cur) * d_cur;
    if (i + 1 < N) {
      const auto d_prime =
          denoiser(to_variance_preserving(x_next, abar_next), run.timesteps[i + 1]).eps;
      x_next = x_cur + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_prime);
    }
    run.step_done(i, x, d.x0);
    x = to_variance_preserving(x_next, abar_next);
  }
  return x;
}

}  // namespace diffuse
