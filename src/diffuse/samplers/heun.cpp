#include "diffuse/samplers/heun.h"

#include <algorithm>
#include <cmath>

#include "diffuse/samplers/score.h"
#include "diffuse/samplers/timesteps.h"

namespace diffuse {
namespace {

// The timestep of sigma_hat = (1 + gamma) sigma at level i (Algorithm 2, lines 4-5), rounded to
// the nearest one at or above timesteps[i].
int64_t churned_timestep(const Denoiser& denoiser, const SamplerRun& run, size_t i) {
  const auto& c = run.churn;
  const int64_t t = run.timesteps[i];
  if (c.churn <= 0.0) return t;
  const double sigma = sigma_of_alpha_bar(denoiser.alpha_bar(t));
  if (sigma < c.s_tmin || sigma > c.s_tmax) return t;
  const double n = static_cast<double>(run.timesteps.size());
  const double gamma = std::min(c.churn / n, std::sqrt(2.0) - 1.0);
  const auto& ab = denoiser.schedule().alphas_cumprod;
  return std::max<int64_t>(t, std::llround(timestep_of_sigma(ab, (1.0 + gamma) * sigma)));
}

}  // namespace

torch::Tensor sample_heun(const Denoiser& denoiser, torch::Tensor x, const SamplerRun& run) {
  const auto N = run.timesteps.size();
  for (size_t i = 0; i < N; ++i) {
    double abar = run.alpha_bar(denoiser, i);
    const double abar_next = run.alpha_bar_next(denoiser, i);
    auto x_cur = to_variance_exploding(x, abar);
    const int64_t t_hat = churned_timestep(denoiser, run, i);
    auto x_in = x;
    if (t_hat != run.timesteps[i]) {
      const double sigma = sigma_of_alpha_bar(abar);
      abar = denoiser.alpha_bar(t_hat);
      const double sigma_hat = sigma_of_alpha_bar(abar);
      const double up = std::sqrt(sigma_hat * sigma_hat - sigma * sigma) * run.churn.s_noise;
      x_cur = x_cur + up * run.noise->randn_like(x);
      x_in = to_variance_preserving(x_cur, abar);
    }
    const double t_cur = sigma_of_alpha_bar(abar), t_next = sigma_of_alpha_bar(abar_next);
    const auto d = denoiser(x_in, t_hat);
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
