#include "diffuse/samplers/dpm_solver_pp.h"

#include <cmath>

namespace diffuse {
namespace {

double lambda_of(double abar) {
  return 0.5 * std::log(abar / (1.0 - abar));
}

// lambda at timesteps[i] (i may run past the list only for the level a step lands on).
double lambda_at(const Denoiser& d, const SamplerRun& run, size_t i) {
  return lambda_of(d.alpha_bar(run.timesteps[i]));
}

// The 3M update from level i (x, x0 history m0 = x0_i, m1, m2) to level i + 1 < S.
torch::Tensor third_order(const Denoiser& d, const SamplerRun& run, size_t i,
                          const torch::Tensor& x, const torch::Tensor& m0, const torch::Tensor& m1,
                          const torch::Tensor& m2) {
  const double abar = run.alpha_bar(d, i), abar_next = run.alpha_bar_next(d, i);
  const double alpha = std::sqrt(abar_next);
  const double l0 = lambda_of(abar), l_next = lambda_of(abar_next);
  const double h = l_next - l0;
  const double r0 = (l0 - lambda_at(d, run, i - 1)) / h;
  const double r1 = (lambda_at(d, run, i - 1) - lambda_at(d, run, i - 2)) / h;
  const auto d1_0 = (m0 - m1) * (1.0 / r0), d1_1 = (m1 - m2) * (1.0 / r1);
  const auto d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1);
  const auto d2 = (d1_0 - d1_1) * (1.0 / (r0 + r1));
  const double em1 = std::expm1(-h);  // e^{-h} - 1
  return (std::sqrt(1.0 - abar_next) / std::sqrt(1.0 - abar)) * x - (alpha * em1) * m0 +
         (alpha * (em1 / h + 1.0)) * d1 - (alpha * ((em1 + h) / (h * h) - 0.5)) * d2;
}

// The 2M update (first order without m1) from level i to level i + 1 < S.
torch::Tensor second_order(const Denoiser& d, const SamplerRun& run, size_t i,
                           const torch::Tensor& x, const torch::Tensor& m0,
                           const torch::Tensor& m1) {
  const double abar = run.alpha_bar(d, i), abar_next = run.alpha_bar_next(d, i);
  const double alpha_next = std::sqrt(abar_next);
  const double h = lambda_of(abar_next) - lambda_of(abar);
  const double phi = -std::expm1(-h);  // 1 - e^{-h}
  auto next = (std::sqrt(1.0 - abar_next) / std::sqrt(1.0 - abar)) * x + (alpha_next * phi) * m0;
  if (m1.defined()) {
    const double r = (lambda_of(abar) - lambda_at(d, run, i - 1)) / h;
    next = next + (alpha_next * phi * 0.5 / r) * (m0 - m1);
  }
  return next;
}

}  // namespace

torch::Tensor sample_dpmpp_2m(const Denoiser& denoiser, torch::Tensor x, const SamplerRun& run) {
  torch::Tensor x0_prev;
  const auto S = run.timesteps.size();
  for (size_t i = 0; i < S; ++i) {
    const auto d = denoiser(x, run.timesteps[i]);
    auto next = i + 1 < S ? second_order(denoiser, run, i, x, d.x0, x0_prev) : d.x0;
    run.step_done(i, x, d.x0);
    x0_prev = d.x0;
    x = std::move(next);
  }
  return x;
}

torch::Tensor sample_dpmpp_3m(const Denoiser& denoiser, torch::Tensor x, const SamplerRun& run) {
  torch::Tensor m1, m2;  // x0 at the previous two levels
  const auto S = run.timesteps.size();
  for (size_t i = 0; i < S; ++i) {
    const auto d = denoiser(x, run.timesteps[i]);
    torch::Tensor next;
    if (i + 1 == S) {
      next = d.x0;
    } else if (i == 0 || i == 1 || (i + 2 == S && S < 15)) {
      next = second_order(denoiser, run, i, x, d.x0, i == 0 ? torch::Tensor() : m1);
    } else {
      next = third_order(denoiser, run, i, x, d.x0, m1, m2);
    }
    run.step_done(i, x, d.x0);
    m2 = m1;
    m1 = d.x0;
    x = std::move(next);
  }
  return x;
}

torch::Tensor sample_dpmpp_2m_sde(const Denoiser& denoiser, torch::Tensor x,
                                  const SamplerRun& run) {
  torch::Tensor x0_prev;
  const auto S = run.timesteps.size();
  for (size_t i = 0; i < S; ++i) {
    const auto d = denoiser(x, run.timesteps[i]);
    torch::Tensor next = d.x0;
    if (i + 1 < S) {
      const double abar = run.alpha_bar(denoiser, i), abar_next = run.alpha_bar_next(denoiser, i);
      const double alpha_next = std::sqrt(abar_next), sigma_next = std::sqrt(1.0 - abar_next);
      const double h = lambda_of(abar_next) - lambda_of(abar);
      const double phi2 = -std::expm1(-2.0 * h);  // 1 - e^{-2h}
      auto D = d.x0;
      if (x0_prev.defined()) {
        const double r = (lambda_of(abar) - lambda_at(denoiser, run, i - 1)) / h;
        D = D + (0.5 / r) * (d.x0 - x0_prev);
      }
      next = (sigma_next / std::sqrt(1.0 - abar) * std::exp(-h)) * x + (alpha_next * phi2) * D +
             (sigma_next * std::sqrt(phi2)) * run.noise->randn_like(x);
    }
    run.step_done(i, x, d.x0);
    x0_prev = d.x0;
    x = std::move(next);
  }
  return x;
}

}  // namespace diffuse
